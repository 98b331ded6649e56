variable "name" {
  description = "Instance name; also the Kubernetes node name k3s registers."
  type        = string
}

variable "flavor_name" {
  description = "Flavor: a KVM size such as `m1.large`, or `baremetal` on CHI sites."
  type        = string
}

variable "image_name" {
  description = "Glance image name, e.g. `CC-Ubuntu22.04` (KVM) or `CC-Ubuntu22.04-CUDA` (GPU bare metal)."
  type        = string
}

variable "key_pair" {
  description = "Name of an existing Nova keypair on this site."
  type        = string
}

variable "network_id" {
  description = "ID of the network to attach to. Set this or `network_name`, not both."
  type        = string
  default     = null
}

variable "network_name" {
  description = "Name of the network to attach to (e.g. `sharednet1` on CHI sites). Set this or `network_id`."
  type        = string
  default     = null
}

variable "fixed_ip_v4" {
  description = "Fixed private IPv4 address, or null to let DHCP choose. The control node pins one so agents know where to join before it exists."
  type        = string
  default     = null
}

variable "security_groups" {
  description = "Security group names to attach (instances take names, not IDs)."
  type        = list(string)
  default     = []
}

variable "user_data" {
  description = "Rendered cloud-init. Sensitive because it carries the k3s join token."
  type        = string
  sensitive   = true
}

variable "reservation_id" {
  description = "Blazar reservation ID passed as the `reservation` scheduler hint; empty for on-demand KVM instances."
  type        = string
  default     = ""
}

variable "associate_floating_ip" {
  description = "Whether to attach `floating_ip_address` to this instance's port."
  type        = bool
  default     = false
}

variable "floating_ip_address" {
  description = "A floating IP allocated by the caller (so its address can be baked into cloud-init before boot)."
  type        = string
  default     = null
}

variable "metadata" {
  description = "Nova metadata key/value pairs (role, cluster) shown in Horizon and `openstack server show`."
  type        = map(string)
  default     = {}
}

variable "create_timeout" {
  description = "How long Terraform waits for the instance to become ACTIVE; bare metal takes 10-20 minutes to deploy."
  type        = string
  default     = "30m"
}
