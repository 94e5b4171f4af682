/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: the redirect of pod DNS to the agent's DNS proxy, as a NAT at the pod's veth.
 *
 * A proxy in Node.js can neither read a datagram's original destination nor answer from
 * an address that is not its own, so a transparent redirect (TPROXY, bpf_sk_assign) would
 * not help it. Instead:
 *   dnsproxy_to_proxy4    from_container, after the policy verdict (or the conntrack
 *                         entry) redirected a packet to the DNS proxy: records the pod's
 *                         (address, port, protocol) -> original (address, port) in
 *                         hypha_dnsproxy4 and rewrites the destination to the proxy's
 *                         local address and port. The proxy reads the map to forward the
 *                         query where the pod sent it.
 *   dnsproxy_from_proxy4  to_container, before conntrack: a packet from the proxy's
 *                         address and port to a pod port with an entry gets the original
 *                         destination back as its source, so the pod (and conntrack)
 *                         see the DNS server answer.
 * UDP and TCP alike (DNS over TCP is a stream to the same port). Conntrack keys on the
 * original tuple, so policy, flows and the socket load balancer's reverse translation are
 * unchanged. A redirect whose proxy has no socket (the proxy is down, restarting, or was
 * never configured) is dropped with Cilium's SOCKET_LOOKUP_FAILED: DNS under a dns rule
 * never bypasses the proxy.
 */
#ifndef __HYPHA_DNSPROXY_H
#define __HYPHA_DNSPROXY_H

#include "common.h"
#include "drop.h"
#include "rewrite.h"

#include <stddef.h>
#include <linux/tcp.h>
#include <linux/udp.h>


/* The pod's side of a proxied exchange. */
struct dnsproxy_key4 {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* Where the pod sent it, and who: the proxy needs both to pick the rules. */
struct dnsproxy_entry4 {
	__be32 orig_daddr;
	__be16 orig_dport;
	__u16 endpoint;
	__u32 dst_identity;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dnsproxy_key4);
	__type(value, struct dnsproxy_entry4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_dnsproxy4 SEC(".maps");

/* The proxy's local address and port (network order), set at load time; 0: no proxy. */
const volatile __be32 dnsproxy_addr4 = 0;
const volatile __be16 dnsproxy_port = 0;

/* The L4 header's offset of an unfragmented IPv4 TCP/UDP packet, or 0. */
__hy_inline __u32 __dnsproxy_l4(struct __sk_buff *skb, struct iphdr *out)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, out, sizeof(*out)) < 0)
		return 0;
	if (out->version != 4 || out->ihl < 5 || (out->frag_off & bpf_htons(0x1fff)))
		return 0;
	if (out->protocol != IPPROTO_UDP && out->protocol != IPPROTO_TCP)
		return 0;
	return ETH_HLEN + out->ihl * 4;
}

/* Whether the proxy has a socket for this exchange (its UDP socket, or TCP listener/connection). */
__hy_inline bool __dnsproxy_listening(struct __sk_buff *skb, __u8 proto, __be32 saddr, __be16 sport)
{
	struct bpf_sock_tuple t = {
		.ipv4 = { .saddr = saddr, .daddr = dnsproxy_addr4, .sport = sport, .dport = dnsproxy_port },
	};
	struct bpf_sock *sk = proto == IPPROTO_UDP
				      ? bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0)
				      : bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);

	if (!sk)
		return false;
	bpf_sk_release(sk);
	return true;
}

/*
 * from_container, for a packet handle() let through. skb->mark names the proxy a redirect
 * goes to (MARK_MAGIC_TO_PROXY | port << 16, set for a new connection's verdict and for
 * every later packet of it). Returns 0 or a drop reason.
 */
__hy_inline int dnsproxy_to_proxy4(struct __sk_buff *skb, __u16 endpoint, __u32 dst_identity)
{
	__u16 port = skb->mark >> 16;
	struct dnsproxy_entry4 e = { .endpoint = endpoint, .dst_identity = dst_identity };
	struct dnsproxy_key4 k = {};
	struct iphdr ip;
	__be16 ports[2];
	__u32 l4off;

	if ((skb->mark & 0xffff) != MARK_MAGIC_TO_PROXY)
		return 0;
	l4off = __dnsproxy_l4(skb, &ip);
	if (!l4off)
		return 0;
	if (!dnsproxy_port || port != bpf_ntohs(dnsproxy_port)) {
		/* Another proxy's (HTTP over TCP). Over UDP there is no other: no proxy, no pass. */
		return ip.protocol == IPPROTO_UDP ? DROP_PROXY_LOOKUP_FAILED : 0;
	}
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) < 0)
		return DROP_INVALID_PACKET;
	if (!__dnsproxy_listening(skb, ip.protocol, ip.saddr, ports[0]))
		return DROP_PROXY_LOOKUP_FAILED;
	k.addr = ip.saddr;
	k.port = ports[0];
	k.proto = ip.protocol;
	e.orig_daddr = ip.daddr;
	e.orig_dport = ports[1];
	if (bpf_map_update_elem(&hypha_dnsproxy4, &k, &e, BPF_ANY) < 0)
		return DROP_PROXY_LOOKUP_FAILED;
	return nat4_rewrite(skb, l4off, ip.protocol, false, ip.daddr, dnsproxy_addr4, ports[1], dnsproxy_port);
}

/*
 * to_container, before anything else: the proxy's answer to a pod comes from the proxy's
 * address; give it the original destination's. Other packets cost a compare.
 * Returns 0 or a drop reason.
 */
__hy_inline int dnsproxy_from_proxy4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *head = data + ETH_HLEN;
	struct dnsproxy_entry4 *e;
	struct dnsproxy_key4 k = {};
	struct iphdr ip;
	__be16 ports[2];
	__u32 l4off;

	/* The common case leaves here, on one read of the linear data. */
	if (!dnsproxy_port || (void *)(head + 1) > end || head->saddr != dnsproxy_addr4)
		return 0;
	l4off = __dnsproxy_l4(skb, &ip);
	if (!l4off || ip.saddr != dnsproxy_addr4)
		return 0;
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) < 0 || ports[0] != dnsproxy_port)
		return 0;
	k.addr = ip.daddr;
	k.port = ports[1];
	k.proto = ip.protocol;
	e = bpf_map_lookup_elem(&hypha_dnsproxy4, &k);
	if (!e)
		return 0;
	return nat4_rewrite(skb, l4off, ip.protocol, true, ip.saddr, e->orig_daddr, ports[0], e->orig_dport);
}

#endif
