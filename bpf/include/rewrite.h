/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: nat4_rewrite changes one side (source or destination) of an IPv4 TCP/UDP packet,
 * with the L3 and L4 checksums fixed up incrementally. No maps: the per-packet NAT of the
 * devices (nat.h, nodeport.h) and the DNS proxy redirect of the endpoints (dnsproxy.h)
 * both use it.
 */
#ifndef __HYPHA_REWRITE_H
#define __HYPHA_REWRITE_H

#include "common.h"
#include "drop.h"

#include <stddef.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#define NAT_IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define NAT_IP_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define NAT_IP_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

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
