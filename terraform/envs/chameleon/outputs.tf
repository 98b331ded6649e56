output "control_floating_ip" {
  description = "Public IP of the control node (SSH, k3s API, ingress)."
  value       = local.control_ip
}

output "cpu_node_private_ips" {
  description = "Private IPs of the CPU workers (reach them through the control node)."
  value       = module.cluster.cpu_node_private_ips
}

output "gpu_node_floating_ip" {
  description = "Public IP of the GPU bare-metal node, or null for a CPU-only cluster."
  value       = module.cluster.gpu_node_floating_ip
}

output "ssh_command" {
  description = "SSH into the control node; add -J to hop to a worker's private IP."
  value       = "ssh ${local.ssh_user}@${local.control_ip}"
}

output "kubeconfig_command" {
  description = "Writes the kubeconfig (server address rewritten to the floating IP) once cloud-init has finished; then export KUBECONFIG=$PWD/kubeconfig-<prefix>.yaml."
  value       = "ssh ${local.ssh_user}@${local.control_ip} 'sudo cloud-init status --wait >/dev/null; sudo cat /etc/rancher/k3s/k3s.yaml' | sed 's/127.0.0.1/${local.control_ip}/' > ${local.kubeconfig} && chmod 600 ${local.kubeconfig}"
}

output "next_steps" {
  description = "What to do after apply: check the nodes, then bootstrap Argo CD from argo/."
  value       = <<-EOT
    1. Fetch the kubeconfig:   terraform output -raw kubeconfig_command | sh
                               export KUBECONFIG=$PWD/${local.kubeconfig}
    2. Check the nodes:        kubectl get nodes -L taigimed.io/pool,taigimed.io/accelerator
    3. Bootstrap Argo CD:      kubectl apply -k ../../../argo/bootstrap   (see argo/README.md)
       Argo CD then syncs manifests/overlays/<env> from git.
  EOT
}

output "k3s_token" {
  description = "k3s join token, for adding nodes by hand: terraform output -raw k3s_token."
  value       = module.cluster.k3s_token
  sensitive   = true
}
