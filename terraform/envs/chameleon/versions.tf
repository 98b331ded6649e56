terraform {
  required_version = ">= 1.6.0"

  required_providers {
    openstack = {
      source  = "terraform-provider-openstack/openstack"
      version = "~> 3.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

# Chameleon's sites are separate OpenStack clouds, each with its own Keystone, region and
# application credentials; one provider configuration per site.
provider "openstack" {
  #checkov:skip=CKV_OPENSTACK_1:the credential is var.kvm_application_credential_secret (a sensitive variable from the environment), not a value written in code
  alias                         = "kvm"
  auth_url                      = var.kvm_auth_url
  region                        = var.kvm_region
  application_credential_id     = var.kvm_application_credential_id
  application_credential_secret = var.kvm_application_credential_secret
}

# With delayed_auth (the provider default) this site is never contacted when
# gpu_reservation_id is empty, so a CPU-only cluster needs no working CHI credential.
provider "openstack" {
  #checkov:skip=CKV_OPENSTACK_1:the credential is var.chi_application_credential_secret (a sensitive variable from the environment), not a value written in code
  alias                         = "chi"
  auth_url                      = var.chi_auth_url
  region                        = var.chi_region
  application_credential_id     = var.chi_application_credential_id
  application_credential_secret = var.chi_application_credential_secret
}
