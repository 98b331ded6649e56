output "id" {
  description = "Instance ID."
  value       = openstack_compute_instance_v2.this.id
}

output "name" {
  description = "Instance name (also the Kubernetes node name)."
  value       = openstack_compute_instance_v2.this.name
}

output "private_ip" {
  description = "First fixed IPv4 address of the instance."
  value       = openstack_compute_instance_v2.this.access_ip_v4
}

output "floating_ip" {
  description = "The floating IP attached to this instance, or null."
  value       = var.associate_floating_ip ? var.floating_ip_address : null
}
