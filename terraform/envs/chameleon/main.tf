# Chameleon Cloud environment of TaigiMed: CPU VMs on KVM@TACC, an optional GPU bare-metal node
# on a CHI site through a Blazar reservation. See terraform/README.md for the runbook.

module "cluster" {
  source = "../../modules/cluster"
  providers = {
    openstack.kvm = openstack.kvm
    openstack.chi = openstack.chi
  }

  name_prefix                 = var.name_prefix
  ssh_public_key              = var.ssh_public_key
  admin_cidr                  = var.admin_cidr
  ingress_cidr                = var.ingress_cidr
  control_flavor              = var.control_flavor
  cpu_node_count              = var.cpu_node_count
  cpu_flavor                  = var.cpu_flavor
  kvm_image                   = var.kvm_image
  gpu_reservation_id          = var.gpu_reservation_id
  gpu_image                   = var.gpu_image
  k3s_version                 = var.k3s_version
  k3s_disable_components      = var.k3s_disable_components
  deploy_nvidia_device_plugin = var.deploy_nvidia_device_plugin
}

locals {
  control_ip = module.cluster.control_floating_ip
  ssh_user   = module.cluster.ssh_user
  kubeconfig = "kubeconfig-${var.name_prefix}.yaml"
}
