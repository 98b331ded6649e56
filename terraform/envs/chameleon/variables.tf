# --- sites and credentials ------------------------------------------------------------------

variable "kvm_auth_url" {
  description = "Keystone URL of the KVM site."
  type        = string
  default     = "https://kvm.tacc.chameleoncloud.org:5000/v3"
}

variable "kvm_region" {
  description = "Region name of the KVM site."
  type        = string
  default     = "KVM@TACC"
}

variable "kvm_application_credential_id" {
  description = "ID of an application credential created on the KVM site (Identity > Application Credentials)."
  type        = string
}

variable "kvm_application_credential_secret" {
  description = "Secret of that KVM application credential. Pass it as TF_VAR_kvm_application_credential_secret, never in a file."
  type        = string
  sensitive   = true
}

variable "chi_auth_url" {
  description = "Keystone URL of the bare-metal site: CHI@TACC (default) or https://chi.uc.chameleoncloud.org:5000/v3 for CHI@UC."
  type        = string
  default     = "https://chi.tacc.chameleoncloud.org:5000/v3"
}

variable "chi_region" {
  description = "Region name of the bare-metal site: CHI@TACC or CHI@UC."
  type        = string
  default     = "CHI@TACC"
}

variable "chi_application_credential_id" {
  description = "ID of an application credential created on the CHI site. Any placeholder when gpu_reservation_id is empty."
  type        = string
}

variable "chi_application_credential_secret" {
  description = "Secret of that CHI application credential. Pass it as TF_VAR_chi_application_credential_secret; any placeholder when gpu_reservation_id is empty."
  type        = string
  sensitive   = true
}

# --- cluster shape --------------------------------------------------------------------------

variable "name_prefix" {
  description = "Prefix for resource and node names."
  type        = string
  default     = "taigimed"
}

variable "ssh_public_key" {
  description = "OpenSSH public key for the `cc` user on every node."
  type        = string
}

variable "admin_cidr" {
  description = "Your public address as a /32: the only source allowed to SSH and reach the k3s API."
  type        = string

  validation {
    condition     = can(cidrhost(var.admin_cidr, 0)) && var.admin_cidr != "0.0.0.0/0"
    error_message = "admin_cidr must be a CIDR such as 203.0.113.7/32, and not 0.0.0.0/0."
  }
}

variable "ingress_cidr" {
  description = "Who may reach HTTP/HTTPS on the cluster."
  type        = string
  default     = "0.0.0.0/0"
}

variable "control_flavor" {
  description = "KVM flavor of the control node."
  type        = string
  default     = "m1.large"
}

variable "cpu_node_count" {
  description = "Number of CPU worker VMs."
  type        = number
  default     = 2
}

variable "cpu_flavor" {
  description = "KVM flavor of the CPU workers."
  type        = string
  default     = "m1.xlarge"
}

variable "kvm_image" {
  description = "Image of the KVM nodes."
  type        = string
  default     = "CC-Ubuntu22.04"
}

variable "gpu_reservation_id" {
  description = "Blazar reservation ID of the GPU host lease on the CHI site (`openstack reservation lease show`, field reservations.id). Empty: CPU-only cluster."
  type        = string
  default     = ""

  validation {
    condition     = var.gpu_reservation_id == "" || can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.gpu_reservation_id))
    error_message = "gpu_reservation_id must be empty or a reservation UUID (not the lease name)."
  }
}

variable "gpu_image" {
  description = "CUDA image of the GPU node."
  type        = string
  default     = "CC-Ubuntu22.04-CUDA"
}

variable "k3s_version" {
  description = "k3s release on every node."
  type        = string
  default     = "v1.33.2+k3s1"
}

variable "deploy_nvidia_device_plugin" {
  description = "Let the k3s server deploy the NVIDIA device plugin. Default false: the runbook bootstraps Argo CD, whose platform-nvidia-device-plugin Application owns it; set true for a cluster without Argo CD. Never both."
  type        = bool
  default     = false
}

variable "k3s_disable_components" {
  description = "Packaged k3s components to disable. Default [\"traefik\"]: Knative's Kourier ingress (argo/) needs ports 80 and 443."
  type        = list(string)
  default     = ["traefik"]
}
