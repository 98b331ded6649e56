output "control_floating_ip" {
  description = "Public address of the control node: SSH, k3s API (6443) and ingress."
  value       = openstack_networking_floatingip_v2.control.address
}

output "control_private_ip" {
  description = "Private address of the control node on the KVM subnet."
  value       = local.control_private_ip
}

output "cpu_node_private_ips" {
  description = "Private addresses of the CPU workers."
  value       = module.cpu_agent[*].private_ip
}

output "cpu_node_floating_ips" {
  description = "Floating IPs of the CPU workers (empty unless a GPU node is requested)."
  value       = openstack_networking_floatingip_v2.cpu[*].address
}

output "gpu_node_floating_ip" {
  description = "Public address of the GPU node, or null without a reservation."
  value       = local.gpu_enabled ? openstack_networking_floatingip_v2.gpu[0].address : null
}

output "ssh_user" {
  description = "Login user of the nodes."
  value       = var.ssh_user
}

output "k3s_token" {
  description = "The k3s join token (to add nodes by hand). Read it with `terraform output -raw k3s_token`."
  value       = random_password.k3s_token.result
  sensitive   = true
}
