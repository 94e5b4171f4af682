/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: translation state of the connections a node rewrites per packet (NodePort,
 * external IPs), and the rewrites themselves. One LRU map holds every connection twice:
 *   NAT_DIR_FWD  keyed by the tuple the client sent; the value is the tuple to send on
 *                (the backend, and the node's address and an allocated port when the node
 *                translates the source too, NAT_F_SNAT). It pins the connection to its backend.
 *   NAT_DIR_REV  keyed by the backend's reply as it reaches this node; the value is the
 *                tuple the client expects back (from the frontend, to the client).
 * A source port is taken by inserting the reverse entry with BPF_NOEXIST, so two
 * connections never share one. The LRU may evict one half of a pair; the forward path
 * puts a missing reverse entry back (see nodeport.h).
 * The rewrites themselves are rewrite.h's nat4_rewrite.
 */
#ifndef __HYPHA_NAT_H
#define __HYPHA_NAT_H

#include "common.h"
#include "drop.h"
#include "rewrite.h"

#include <stddef.h>
#include <linux/tcp.h>
#include <linux/udp.h>


#define NAT_DIR_FWD 0
#define NAT_DIR_REV 1

/* nat4_entry.flags */
#define NAT_F_SNAT (1 << 0)    /* the node's address and port stand in for the client */
#define NAT_F_CLOSING (1 << 1) /* a FIN or RST went through: short lifetime */

struct nat4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

struct nat4_entry {
	__u64 expires_ns; /* forward entries; CLOCK_MONOTONIC, coarse */
	/* The packet's tuple after translation. */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 rev_nat_index; /* the service, as lb4_service.rev_nat_index */
	__u32 backend_id;
	__u8 flags;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct nat4_key);
	__type(value, struct nat4_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_nat4 SEC(".maps");

/*
 * Node ports for translated sources, set at load time. The default stays above Linux's
 * ephemeral range (32768-60999), so the node's own sockets rarely pick one; a clash
 * matters only for the same backend address, port and protocol.
 */
const volatile __u16 nat_port_min = 61000;
const volatile __u16 nat_port_max = 65535;
/* Lifetimes in seconds of an idle forward entry (as conntrack's defaults). */
const volatile __u32 nat_lifetime_tcp = 21600;
const volatile __u32 nat_lifetime_closing = 10;
const volatile __u32 nat_lifetime_other = 60;

#define NAT_PORT_RETRIES 32
#define NAT_NS_PER_SEC 1000000000ULL


__hy_inline __u64 nat4_lifetime(__u8 proto, __u8 flags)
{
	if (proto != IPPROTO_TCP)
		return nat_lifetime_other * NAT_NS_PER_SEC;
	if (flags & NAT_F_CLOSING)
		return nat_lifetime_closing * NAT_NS_PER_SEC;
	return nat_lifetime_tcp * NAT_NS_PER_SEC;
}

/* The reverse key of a forward entry: the backend's reply to whoever it saw as the client. */
__hy_inline void nat4_rev_key(const struct nat4_entry *fwd, __u8 proto, struct nat4_key *r)
{
	r->saddr = fwd->daddr;
	r->daddr = fwd->saddr;
	r->sport = fwd->dport;
	r->dport = fwd->sport;
	r->proto = proto;
	r->dir = NAT_DIR_REV;
	r->pad[0] = 0;
	r->pad[1] = 0;
}

/*
 * Inserts `rev` under `rkey` with a free destination port of the node's range, tried at
 * random. Returns the port (network order), or 0 when NAT_PORT_RETRIES ports were taken.
 */
__hy_inline __be16 nat4_alloc_port(struct nat4_key *rkey, const struct nat4_entry *rev)
{
	__u32 range = (__u32)nat_port_max - nat_port_min + 1;
	int i;

	for (i = 0; i < NAT_PORT_RETRIES; i++) {
		rkey->dport = bpf_htons((__u16)(nat_port_min + bpf_get_prandom_u32() % range));
		if (!bpf_map_update_elem(&hypha_nat4, rkey, rev, BPF_NOEXIST))
			return rkey->dport;
	}
	return 0;
}

#endif
