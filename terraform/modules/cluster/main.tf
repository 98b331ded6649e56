# A k3s cluster across two Chameleon sites:
#   KVM@TACC  (provider openstack.kvm): private network, control node (k3s server) with a
#             floating IP, CPU workers (k3s agents).
#   CHI site  (provider openstack.chi): optional GPU bare-metal node in a Blazar lease, joining
#             the server over its floating IP.
# Floating IPs are allocated before the instances so their addresses can go into cloud-init
# (k3s needs --node-external-ip and a TLS SAN for the public API address).

locals {
  gpu_enabled = var.gpu_reservation_id != ""

  # Host .10 of the private subnet is the control node; agents on KVM join it there.
  control_private_ip = cidrhost(var.network_cidr, 10)
  control_name       = "${var.name_prefix}-control"

  cpu_agent_fip_count = local.gpu_enabled && var.cpu_agent_floating_ips ? var.cpu_node_count : 0

  # Labels and taints the Kubernetes manifests select on (manifests/ and pipelines/).
  control_labels = ["taigimed.io/role=control"]
  cpu_labels     = ["taigimed.io/pool=cpu"]
  gpu_labels     = ["taigimed.io/accelerator=nvidia-gpu", "nvidia.com/gpu.present=true"]
  gpu_taints     = ["nvidia.com/gpu=present:NoSchedule"]
}

# --- shared secret -------------------------------------------------------------------------

# The join token every agent presents to the server. random_password marks its result
# sensitive, so it stays out of plan output; it is still stored in the state (protect the state).
resource "random_password" "k3s_token" {
  length  = 48
  special = false
}

# --- KVM@TACC: network, keypair, floating IPs ----------------------------------------------

module "network" {
  source = "../network"
  providers = {
    openstack = openstack.kvm
  }

  name_prefix           = var.name_prefix
  network_cidr          = var.network_cidr
  external_network_name = var.kvm_external_network_name
  admin_cidr            = var.admin_cidr
  ingress_cidr          = var.ingress_cidr
  wireguard_cidr        = var.wireguard_cidr
  # The GPU node joins from the CHI site through the control node's floating IP.
  api_peer_cidrs = [for fip in openstack_networking_floatingip_v2.gpu : "${fip.address}/32"]
}

resource "openstack_compute_keypair_v2" "kvm" {
  provider   = openstack.kvm
  name       = "${var.name_prefix}-key"
  public_key = var.ssh_public_key
}

resource "openstack_networking_floatingip_v2" "control" {
  provider    = openstack.kvm
  pool        = var.kvm_external_network_name
  description = "${local.control_name}: SSH, k3s API, ingress"
}

resource "openstack_networking_floatingip_v2" "cpu" {
  count       = local.cpu_agent_fip_count
  provider    = openstack.kvm
  pool        = var.kvm_external_network_name
  description = "${var.name_prefix}-cpu-${count.index}: WireGuard endpoint for the GPU site"
}

# --- KVM@TACC: control node (k3s server) ---------------------------------------------------

module "control" {
  source = "../node"
  providers = {
    openstack = openstack.kvm
  }

  name            = local.control_name
  flavor_name     = var.control_flavor
  image_name      = var.kvm_image
  key_pair        = openstack_compute_keypair_v2.kvm.name
  network_id      = module.network.network_id
  fixed_ip_v4     = local.control_private_ip
  security_groups = [module.network.security_group_name]
  metadata        = { cluster = var.name_prefix, role = "control" }

  associate_floating_ip = true
  floating_ip_address   = openstack_networking_floatingip_v2.control.address

  user_data = templatefile("${path.module}/templates/k3s-server.yaml.tftpl", {
    node_name             = local.control_name
    k3s_version           = var.k3s_version
    k3s_token             = random_password.k3s_token.result
    private_ip            = local.control_private_ip
    external_ip           = openstack_networking_floatingip_v2.control.address
    flannel_external_ip   = local.gpu_enabled
    tls_sans              = [openstack_networking_floatingip_v2.control.address, local.control_private_ip]
    node_labels           = local.control_labels
    disable_components    = var.k3s_disable_components
    install_device_plugin = local.gpu_enabled && var.deploy_nvidia_device_plugin
    device_plugin_version = var.nvidia_device_plugin_version
  })
}

# --- KVM@TACC: CPU workers (k3s agents) ----------------------------------------------------

module "cpu_agent" {
  source = "../node"
  count  = var.cpu_node_count
  providers = {
    openstack = openstack.kvm
  }

  name            = "${var.name_prefix}-cpu-${count.index}"
  flavor_name     = var.cpu_flavor
  image_name      = var.kvm_image
  key_pair        = openstack_compute_keypair_v2.kvm.name
  network_id      = module.network.network_id
  security_groups = [module.network.security_group_name]
  metadata        = { cluster = var.name_prefix, role = "cpu" }

  associate_floating_ip = count.index < local.cpu_agent_fip_count
  floating_ip_address   = count.index < local.cpu_agent_fip_count ? openstack_networking_floatingip_v2.cpu[count.index].address : null

  user_data = templatefile("${path.module}/templates/k3s-agent.yaml.tftpl", {
    node_name   = "${var.name_prefix}-cpu-${count.index}"
    k3s_version = var.k3s_version
    k3s_token   = random_password.k3s_token.result
    server_url  = "https://${local.control_private_ip}:6443"
    external_ip = count.index < local.cpu_agent_fip_count ? openstack_networking_floatingip_v2.cpu[count.index].address : ""
    node_labels = local.cpu_labels
    node_taints = []
    gpu         = false
  })

  # Agents retry until the server answers, but starting them after it saves minutes of backoff.
  depends_on = [module.control]
}

# --- CHI site: GPU bare-metal node (k3s agent) ---------------------------------------------

resource "openstack_compute_keypair_v2" "chi" {
  count      = local.gpu_enabled ? 1 : 0
  provider   = openstack.chi
  name       = "${var.name_prefix}-key"
  public_key = var.ssh_public_key
}

resource "openstack_networking_floatingip_v2" "gpu" {
  count       = local.gpu_enabled ? 1 : 0
  provider    = openstack.chi
  pool        = var.chi_external_network_name
  description = "${var.name_prefix}-gpu-0: SSH and WireGuard endpoint"
}

resource "openstack_networking_secgroup_v2" "gpu" {
  count       = local.gpu_enabled ? 1 : 0
  provider    = openstack.chi
  name        = "${var.name_prefix}-gpu"
  description = "GPU node: SSH from the admin CIDR, WireGuard overlay from the cluster"
}

resource "openstack_networking_secgroup_rule_v2" "gpu_ssh" {
  count             = local.gpu_enabled ? 1 : 0
  provider          = openstack.chi
  description       = "SSH from the admin CIDR only"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 22
  port_range_max    = 22
  remote_ip_prefix  = var.admin_cidr
  security_group_id = openstack_networking_secgroup_v2.gpu[0].id
}

resource "openstack_networking_secgroup_rule_v2" "gpu_wireguard" {
  count             = local.gpu_enabled ? 1 : 0
  provider          = openstack.chi
  description       = "flannel wireguard-native overlay from the KVM nodes"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "udp"
  port_range_min    = 51820
  port_range_max    = 51820
  remote_ip_prefix  = var.wireguard_cidr
  security_group_id = openstack_networking_secgroup_v2.gpu[0].id
}

module "gpu_node" {
  source = "../node"
  count  = local.gpu_enabled ? 1 : 0
  providers = {
    openstack = openstack.chi
  }

  name            = "${var.name_prefix}-gpu-0"
  flavor_name     = var.gpu_flavor
  image_name      = var.gpu_image
  key_pair        = openstack_compute_keypair_v2.chi[0].name
  network_name    = var.gpu_network_name
  security_groups = [openstack_networking_secgroup_v2.gpu[0].name]
  reservation_id  = var.gpu_reservation_id
  create_timeout  = "45m"
  metadata        = { cluster = var.name_prefix, role = "gpu" }

  associate_floating_ip = true
  floating_ip_address   = openstack_networking_floatingip_v2.gpu[0].address

  user_data = templatefile("${path.module}/templates/k3s-agent.yaml.tftpl", {
    node_name   = "${var.name_prefix}-gpu-0"
    k3s_version = var.k3s_version
    k3s_token   = random_password.k3s_token.result
    server_url  = "https://${openstack_networking_floatingip_v2.control.address}:6443"
    external_ip = openstack_networking_floatingip_v2.gpu[0].address
    node_labels = local.gpu_labels
    node_taints = local.gpu_taints
    gpu         = true
  })

  depends_on = [module.control]
}
