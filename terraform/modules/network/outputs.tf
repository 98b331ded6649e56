output "network_id" {
  description = "ID of the private network the KVM nodes attach to."
  value       = openstack_networking_network_v2.private.id
}

output "subnet_id" {
  description = "ID of the private subnet."
  value       = openstack_networking_subnet_v2.private.id
}

output "network_cidr" {
  description = "CIDR of the private subnet (echoed so callers can compute fixed IPs)."
  value       = openstack_networking_subnet_v2.private.cidr
}

output "router_id" {
  description = "ID of the router that gives the private subnet NAT and floating IPs."
  value       = openstack_networking_router_v2.router.id
}

output "security_group_name" {
  description = "Name of the cluster security group (instances take names, not IDs)."
  value       = openstack_networking_secgroup_v2.cluster.name
}

output "security_group_id" {
  description = "ID of the cluster security group."
  value       = openstack_networking_secgroup_v2.cluster.id
}

output "external_network_name" {
  description = "Name of the floating IP pool on this site."
  value       = data.openstack_networking_network_v2.external.name
}
