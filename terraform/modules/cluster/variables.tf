variable "name_prefix" {
  description = "Prefix for every resource and node name."
  type        = string
  default     = "taigimed"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name_prefix))
    error_message = "name_prefix must be 2-31 characters of lowercase letters, digits and dashes (it becomes hostnames)."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed on every node (a keypair is created on each site)."
  type        = string
}

variable "ssh_user" {
  description = "Login user of the images; Chameleon's CC-* images use `cc`."
  type        = string
  default     = "cc"
}

variable "admin_cidr" {
  description = "CIDR allowed to reach SSH and the k3s API (6443). Your own /32."
  type        = string
}

variable "ingress_cidr" {
  description = "CIDR allowed to reach HTTP/HTTPS ingress on the KVM nodes."
  type        = string
  default     = "0.0.0.0/0"
}

variable "wireguard_cidr" {
  description = "CIDR allowed to reach flannel's WireGuard port (51820/udp) on every node."
  type        = string
  default     = "0.0.0.0/0"
}

variable "network_cidr" {
  description = "Private subnet on KVM@TACC; the control node takes host .10 of it."
  type        = string
  default     = "10.20.0.0/24"
}

variable "kvm_external_network_name" {
  description = "Floating IP pool on the KVM site."
  type        = string
  default     = "public"
}

variable "chi_external_network_name" {
  description = "Floating IP pool on the CHI site."
  type        = string
  default     = "public"
}

variable "control_flavor" {
  description = "KVM flavor of the control node (k3s server, Argo CD, Prometheus)."
  type        = string
  default     = "m1.large"
}

variable "cpu_node_count" {
  description = "Number of CPU worker VMs (label taigimed.io/pool=cpu) on KVM@TACC."
  type        = number
  default     = 2

  validation {
    condition     = var.cpu_node_count >= 1 && var.cpu_node_count <= 10
    error_message = "cpu_node_count must be between 1 and 10: the CPU pool runs the guard, pipelines and Knative."
  }
}

variable "cpu_flavor" {
  description = "KVM flavor of the CPU workers."
  type        = string
  default     = "m1.xlarge"
}

variable "kvm_image" {
  description = "Image of the control node and CPU workers on KVM@TACC."
  type        = string
  default     = "CC-Ubuntu22.04"
}

variable "cpu_agent_floating_ips" {
  description = "Give CPU workers floating IPs when a GPU node is requested, so the GPU node on the other site can reach them over WireGuard. Without them, pods on the GPU node reach only pods on the control node."
  type        = bool
  default     = true
}

variable "gpu_reservation_id" {
  description = "Blazar reservation ID (not the lease ID) of a GPU bare-metal host on the CHI site. Empty: no GPU node."
  type        = string
  default     = ""
}

variable "gpu_flavor" {
  description = "Flavor of the GPU node; Chameleon bare metal is always `baremetal`."
  type        = string
  default     = "baremetal"
}

variable "gpu_image" {
  description = "CUDA image for the GPU node (driver preinstalled), e.g. `CC-Ubuntu22.04-CUDA`."
  type        = string
  default     = "CC-Ubuntu22.04-CUDA"
}

variable "gpu_network_name" {
  description = "Network the GPU node attaches to on the CHI site; `sharednet1` is the shared routed network."
  type        = string
  default     = "sharednet1"
}

variable "k3s_version" {
  description = "k3s release installed on every node (same on all nodes)."
  type        = string
  default     = "v1.33.2+k3s1"
}

variable "k3s_disable_components" {
  description = "Packaged k3s components to disable. Default [\"traefik\"]: Knative's Kourier ingress (argo/) needs ports 80 and 443."
  type        = list(string)
  default     = ["traefik"]
}

variable "deploy_nvidia_device_plugin" {
  description = "Let the k3s server deploy the NVIDIA device plugin. Default false: the runbook bootstraps Argo CD, whose platform-nvidia-device-plugin Application owns it; set true for a cluster without Argo CD. Never both."
  type        = bool
  default     = false
}

variable "nvidia_device_plugin_version" {
  description = "Tag of nvcr.io/nvidia/k8s-device-plugin deployed when a GPU node exists (keep equal to the chart version of argo/apps/platform-nvidia-device-plugin.yaml)."
  type        = string
  default     = "v0.18.0"
}
