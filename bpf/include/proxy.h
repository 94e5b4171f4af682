/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: transparent redirect of TCP connections to the node's L7 (HTTP) proxy.
 *
 * A redirect verdict (or a conntrack entry carrying a proxy port) leaves skb->mark =
 * MARK_MAGIC_TO_PROXY | port << 16 on the packet. Then, for every packet of the connection:
 *   pod egress   from_container (tc ingress) assigns the packet to the proxy's socket with
 *                bpf_sk_assign: the connection's own socket once it exists, else the
 *                proxy's listener on 127.0.0.1:port. The agent's `ip rule fwmark
 *                0x200/0xf00 lookup 2004` and `local 0.0.0.0/0 dev lo table 2004` make the
 *                node deliver the packet locally; the accepted socket's local address is
 *                the original destination.
 *   pod ingress  to_container runs at tc egress, where bpf_sk_assign is not allowed: it
 *                turns the packet around (bpf_redirect to its own veth's ingress, MACs
 *                swapped so the node takes it as its own), and from_container, which
 *                sees the mark before anything else, assigns it as above.
 * The proxy's listener is IP_TRANSPARENT: its answers leave from the original destination.
 * A redirect whose proxy has no socket (down, restarting) is dropped with Cilium's
 * DROP_PROXY_LOOKUP_FAILED (Hubble: SOCKET_LOOKUP_FAILED): L7 rules are never bypassed. A
 * packet with an assigned socket is never forwarded by the kernel (ip_forward drops it).
 *
 * The proxy's own connections to the destination carry a mark too (SO_MARK):
 * MARK_MAGIC_PROXY_INGRESS or MARK_MAGIC_PROXY_EGRESS with the client's identity. At the
 * destination's to_container that identity stands for the source (not the node's), and an
 * ingress proxy's connection passes the ingress policy it already enforced at L7. The
 * egress proxy connects from the pod's own address and port (transparent), so that other
 * nodes see the pod: the replies reach the pod's to_container on the original connection's
 * conntrack entry and are turned around to the proxy like its requests
 * (proxy_upstream_reply).
 */
#ifndef __HYPHA_PROXY_H
#define __HYPHA_PROXY_H

#include "common.h"
#include "dnsproxy.h"
#include "drop.h"
#include "endpoints.h"
#include "events.h"
#include "metrics.h"

#include <linux/tcp.h>

/* skb->mark: magic in bits 8-11 (Cilium's). */
#define MARK_MAGIC_HOST_MASK 0x0F00
#define MARK_MAGIC_PROXY_INGRESS 0x0A00
#define MARK_MAGIC_PROXY_EGRESS 0x0B00

/* proxy_redirect4: the packet went to bpf_redirect (return TC_ACT_REDIRECT). */
#define PROXY_HAIRPIN -2

#define PROXY_LOOPBACK 0x7f000001

/* Packets for the proxy, from the verdict, the conntrack entry or to_container's turn-around. */
__hy_inline bool __proxy_marked(const struct __sk_buff *skb)
{
	return (skb->mark & MARK_MAGIC_HOST_MASK) == MARK_MAGIC_TO_PROXY;
}

/* The identity an upstream mark carries: 16 bits at the top, 8 more in the low byte. */
__hy_inline __u32 __proxy_mark_identity(__u32 mark)
{
	return (mark >> 16) | ((mark & 0xff) << 16);
}

/* The IPv4 TCP tuple of an unfragmented packet: 0, a drop reason, or 1 for another protocol. */
__hy_inline int __proxy_tuple4(struct __sk_buff *skb, struct bpf_sock_tuple *t)
{
	struct iphdr ip;
	__be16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return DROP_UNSUPPORTED_L3;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return DROP_INVALID_PACKET;
	if (ip.version != 4 || ip.ihl < 5 || (ip.frag_off & bpf_htons(0x1fff)))
		return DROP_INVALID_PACKET;
	if (ip.protocol != IPPROTO_TCP)
		return 1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ip.ihl * 4, ports, sizeof(ports)) < 0)
		return DROP_CT_INVALID_HEADER;
	t->ipv4.saddr = ip.saddr;
	t->ipv4.daddr = ip.daddr;
	t->ipv4.sport = ports[0];
	t->ipv4.dport = ports[1];
	return 0;
}

/* The proxy's listener on 127.0.0.1:port, or NULL. The caller releases it. */
__hy_inline struct bpf_sock *__proxy_listener(struct __sk_buff *skb, const struct bpf_sock_tuple *t, __u16 port)
{
	struct bpf_sock_tuple l = *t;
	struct bpf_sock *sk;

	l.ipv4.daddr = bpf_htonl(PROXY_LOOPBACK);
	l.ipv4.dport = bpf_htons(port);
	sk = bpf_skc_lookup_tcp(skb, &l, sizeof(l.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return NULL;
	}
	return sk;
}

/*
 * Assigns the packet to the proxy: the socket of its own connection when there is one
 * (established, or a request socket for a repeated SYN), else the listener. A listener on
 * the original destination or a TIME_WAIT socket of an old connection is not the proxy's.
 */
__hy_inline int __proxy_assign4(struct __sk_buff *skb, const struct bpf_sock_tuple *t, __u16 port)
{
	struct bpf_sock_tuple own = *t;
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &own, sizeof(own.ipv4), BPF_F_CURRENT_NETNS, 0);
	long r;

	if (sk && (sk->state == BPF_TCP_LISTEN || sk->state == BPF_TCP_TIME_WAIT)) {
		bpf_sk_release(sk);
		sk = NULL;
	}
	if (!sk)
		sk = __proxy_listener(skb, t, port);
	if (!sk)
		return DROP_PROXY_LOOKUP_FAILED;
	r = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return r ? DROP_PROXY_SET_FAILED : 0;
}

/*
 * After the verdict, in both programs: sends a packet marked for the HTTP proxy there.
 * Returns 0 (nothing to do, or assigned), PROXY_HAIRPIN, or a drop reason. UDP and the DNS
 * proxy's port belong to dnsproxy.h, which has run by then.
 */
__hy_inline int proxy_redirect4(struct __sk_buff *skb, bool egress)
{
	__u16 port = skb->mark >> 16;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	struct ethhdr eth;
	__u8 tmp[ETH_ALEN];
	int r;

	if (!__proxy_marked(skb))
		return 0;
	r = __proxy_tuple4(skb, &t);
	if (r == 1)
		return egress ? 0 : DROP_PROXY_UNKNOWN_PROTO;
	if (r)
		return r;
	if (egress)
		return port == bpf_ntohs(dnsproxy_port) ? 0 : __proxy_assign4(skb, &t, port);

	/* Ingress: refuse here, with this endpoint's event, when the proxy is not there. */
	sk = __proxy_listener(skb, &t, port);
	if (!sk)
		return DROP_PROXY_LOOKUP_FAILED;
	bpf_sk_release(sk);
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return DROP_INVALID_PACKET;
	__builtin_memcpy(tmp, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, tmp, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, 0, &eth, 2 * ETH_ALEN, 0) < 0)
		return DROP_INVALID_PACKET;
	bpf_redirect(skb->ifindex, BPF_F_INGRESS);
	return PROXY_HAIRPIN;
}

/* from_container, first thing: a packet to_container turned around for the proxy. */
__hy_inline bool proxy_hairpinned(const struct __sk_buff *skb)
{
	return __proxy_marked(skb);
}

/* Delivers a turned-around packet to the proxy; a failure is the endpoint's ingress drop. */
__hy_inline int proxy_deliver4(struct __sk_buff *skb)
{
	struct bpf_sock_tuple t = {};
	struct endpoint_info *ep;
	struct event_info ev = { .direction = DIR_INGRESS, .type = EVENT_DROP, .verdict = VERDICT_DROPPED };
	int r = __proxy_tuple4(skb, &t);

	if (r == 1)
		r = DROP_PROXY_UNKNOWN_PROTO;
	if (!r)
		r = __proxy_assign4(skb, &t, skb->mark >> 16);
	if (!r)
		return TC_ACT_OK;
	ep = endpoint_lookup(skb->ifindex);
	if (ep) {
		ev.source = ep->id;
		ev.dst_identity = ep->identity;
	}
	ev.subtype = r;
	metrics_count(r, DIR_INGRESS, skb->len);
	event_emit(skb, &ev);
	return TC_ACT_SHOT;
}

/*
 * to_container, for a reply on a connection the egress proxy took over: the proxy's
 * connection to the destination uses the pod's own address and port (the destination
 * sees the pod), so the destination's replies come here. Those that no local socket sent
 * (the proxy's answers to the pod did) go to the proxy's connection.
 */
__hy_inline bool proxy_upstream_reply(struct __sk_buff *skb, bool egress)
{
	return !egress && !skb->sk;
}

/* to_container: the peer's identity, the client's for the proxy's own connections. */
__hy_inline __u32 proxy_peer_identity(const struct __sk_buff *skb, bool egress, __u32 peer)
{
	__u32 magic = skb->mark & MARK_MAGIC_HOST_MASK;

	if (egress || (magic != MARK_MAGIC_PROXY_INGRESS && magic != MARK_MAGIC_PROXY_EGRESS))
		return peer;
	return __proxy_mark_identity(skb->mark);
}

/* to_container: the ingress proxy's connection, whose policy the proxy enforced already. */
__hy_inline bool proxy_enforced(const struct __sk_buff *skb, bool egress)
{
	return !egress && (skb->mark & MARK_MAGIC_HOST_MASK) == MARK_MAGIC_PROXY_INGRESS;
}

#endif
