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
 *
 * nat4_rewrite changes one side (source or destination) of a packet with the L3 and L4
 * checksums fixed up incrementally, for TCP and UDP.
 */
#ifndef __HYPHA_NAT_H
#define __HYPHA_NAT_H

#include "common.h"

#include <stddef.h>
#include <linux/tcp.h>
#include <linux/udp.h>

/* Cilium's drop reasons; drop.h is their home once it is free to edit. */
#ifndef DROP_WRITE_ERROR
#define DROP_WRITE_ERROR 141
#endif
#ifndef DROP_CSUM_L3
#define DROP_CSUM_L3 153
#endif
#ifndef DROP_CSUM_L4
#define DROP_CSUM_L4 154
#endif
#ifndef DROP_CT_CREATE_FAILED
#define DROP_CT_CREATE_FAILED 155
#endif
#ifndef DROP_NAT_NO_MAPPING
#define DROP_NAT_NO_MAPPING 167
#endif

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

#define NAT_IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define NAT_IP_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define NAT_IP_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

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

/*
 * Rewrites the source (src) or destination of an IPv4 TCP/UDP packet in an Ethernet frame,
 * its L4 header at l4off, from (old_addr, old_port) to (new_addr, new_port). The checksum
 * helpers handle CHECKSUM_PARTIAL packets (veths carry most so) and keep a UDP checksum of
 * 0 (none) as it is. Returns 0 or a drop reason.
 */
__hy_inline int nat4_rewrite(struct __sk_buff *skb, __u32 l4off, __u8 proto, bool src, __be32 old_addr,
			     __be32 new_addr, __be16 old_port, __be16 new_port)
{
	__u32 csum_off = l4off + (proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						       : offsetof(struct udphdr, check));
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 addr_off = src ? NAT_IP_SADDR_OFF : NAT_IP_DADDR_OFF;
	__u32 port_off = l4off + (src ? offsetof(struct tcphdr, source) : offsetof(struct tcphdr, dest));

	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
					mangled | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
			return DROP_CSUM_L4;
		if (bpf_l3_csum_replace(skb, NAT_IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
			return DROP_CSUM_L3;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
			return DROP_WRITE_ERROR;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) < 0)
			return DROP_CSUM_L4;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return DROP_WRITE_ERROR;
	}
	return 0;
}

#endif
