# One OpenStack instance with cloud-init and, optionally, a floating IP. The caller picks the site
# by passing a provider configuration (`providers = { openstack = openstack.kvm }` or
# `openstack.chi`); nothing here is site-specific except what the variables say.

resource "openstack_compute_instance_v2" "this" {
  name            = var.name
  flavor_name     = var.flavor_name
  image_name      = var.image_name
  key_pair        = var.key_pair
  security_groups = var.security_groups
  user_data       = var.user_data
  metadata        = var.metadata

  network {
    uuid        = var.network_id
    name        = var.network_name
    fixed_ip_v4 = var.fixed_ip_v4
  }

  # Bare-metal nodes on CHI sites only schedule into a Blazar lease: Nova's Blazar filter picks
  # a host from the reservation named by this hint. KVM instances need no hint.
  dynamic "scheduler_hints" {
    for_each = var.reservation_id == "" ? [] : [var.reservation_id]
    content {
      additional_properties = {
        reservation = scheduler_hints.value
      }
    }
  }

  timeouts {
    create = var.create_timeout
  }

  lifecycle {
    precondition {
      condition     = (var.network_id == null) != (var.network_name == null)
      error_message = "Set exactly one of network_id or network_name for node ${var.name}."
    }
  }
}

resource "openstack_networking_floatingip_associate_v2" "this" {
  count       = var.associate_floating_ip ? 1 : 0
  floating_ip = var.floating_ip_address
  port_id     = openstack_compute_instance_v2.this.network[0].port
}
