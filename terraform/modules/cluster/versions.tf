terraform {
  required_version = ">= 1.6.0"

  required_providers {
    openstack = {
      source  = "terraform-provider-openstack/openstack"
      version = "~> 3.0"
      # Two Chameleon sites are two OpenStack clouds (separate Keystone, separate regions):
      # KVM@TACC for the CPU VMs, a CHI site (CHI@TACC or CHI@UC) for the GPU bare metal.
      configuration_aliases = [openstack.kvm, openstack.chi]
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
