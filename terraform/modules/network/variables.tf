variable "name_prefix" {
  description = "Prefix for every resource name, so several clusters can share one Chameleon project."
  type        = string
}

variable "network_cidr" {
  description = "IPv4 CIDR of the private subnet the KVM nodes live on."
  type        = string
  default     = "10.20.0.0/24"
}

variable "dns_nameservers" {
  description = "DNS resolvers handed out by the private subnet's DHCP."
  type        = list(string)
  default     = ["8.8.8.8", "1.1.1.1"]
}

variable "external_network_name" {
  description = "Name of the site's external (floating IP) network; `public` on Chameleon sites."
  type        = string
  default     = "public"
}

variable "admin_cidr" {
  description = "CIDR allowed to reach SSH (22/tcp) and the k3s API (6443/tcp). Use your own /32, never 0.0.0.0/0."
  type        = string
}

variable "ingress_cidr" {
  description = "CIDR allowed to reach HTTP (80/tcp) and HTTPS (443/tcp) on the cluster's ingress."
  type        = string
  default     = "0.0.0.0/0"
}

variable "wireguard_cidr" {
  description = "CIDR allowed to send flannel's WireGuard traffic (51820/udp). Peers authenticate with keys, so this may stay wide; narrow it to your sites' floating IP ranges if you know them."
  type        = string
  default     = "0.0.0.0/0"
}

variable "api_peer_cidrs" {
  description = "Extra CIDRs (for example the GPU node's floating IP as a /32) that must reach the k3s API on 6443/tcp to join."
  type        = list(string)
  default     = []
}
