// SPDX-License-Identifier: GPL-2.0
/*
 * Programs on the node's external device (the one its node address lives on):
 *   from_netdev  tc ingress: packets from other nodes and the world. Replies of
 *                source-translated connections go back to their clients; packets to a
 *                NodePort, external IP or LoadBalancer frontend go to a backend.
 *   to_netdev    tc egress: replies of local backends leave with the frontend as source.
 * Everything else passes untouched, so the node's own traffic costs a parse and at most
 * one hash lookup. One exit turns a drop reason into a drop event.
 */
#include "include/common.h"
#include "include/events.h"
#include "include/lb.h"
#include "include/nat.h"
#include "include/nodeport.h"

/* Drop reasons are Cilium's numbers, all at least this; smaller results are tc actions. */
#define DROP_REASON_MIN 130

/* parse4: not IPv4 TCP/UDP, or a fragment without ports: none of this program's business. */
#define HOST_PASS 1

/*
 * Reads the tuple of an IPv4 TCP or UDP packet. Later fragments carry no ports and pass,
 * as does everything else; malformed packets are the stack's to drop.
 */
static __always_inline int parse4(struct __sk_buff *skb, struct nodeport4_packet *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__be16 ports[2];

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return HOST_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
		return HOST_PASS;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return HOST_PASS;
	if (ip->frag_off & bpf_htons(0x1fff))
		return HOST_PASS;
	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.proto = ip->protocol;
	p->l4off = sizeof(*eth) + ip->ihl * 4;
	if (bpf_skb_load_bytes(skb, p->l4off, ports, sizeof(ports)) < 0)
		return HOST_PASS;
	p->tuple.sport = ports[0];
	p->tuple.dport = ports[1];
	if (ip->protocol == IPPROTO_TCP &&
	    bpf_skb_load_bytes(skb, p->l4off + 13, &p->tcp_flags, sizeof(p->tcp_flags)) < 0)
		return HOST_PASS;
	return 0;
}

static __always_inline int from_netdev4(struct __sk_buff *skb)
{
	struct nodeport4_packet p = {};
	int r;

	if (parse4(skb, &p))
		return TC_ACT_OK;
	/* Only replies to a translated source come to the node's address with a NAT entry. */
	if (p.tuple.daddr == nodeport_ip4) {
		r = nodeport4_rev_snat(skb, &p);
		if (r != NODEPORT_NO_MATCH)
			return r;
	}
	return nodeport4_fwd(skb, &p);
}

static __always_inline int to_netdev4(struct __sk_buff *skb)
{
	struct nodeport4_packet p = {};

	if (parse4(skb, &p))
		return TC_ACT_OK;
	/* The node's own packets, and those it translated to its own address, need nothing. */
	if (p.tuple.saddr == nodeport_ip4)
		return TC_ACT_OK;
	return nodeport4_rev_dnat(skb, &p);
}

/* The one exit: a drop reason becomes a drop event and TC_ACT_SHOT; tc actions pass through. */
static __always_inline int host_exit(struct __sk_buff *skb, int r, __u8 direction)
{
	struct event_info ev = {};

	if (r < DROP_REASON_MIN)
		return r;
	ev.type = EVENT_DROP;
	ev.subtype = r;
	ev.verdict = VERDICT_DROPPED;
	ev.direction = direction;
	ev.src_identity = ID_UNKNOWN;
	ev.dst_identity = ID_UNKNOWN;
	ev.ct_state = CT_NEW;
	event_emit(skb, &ev);
	return TC_ACT_SHOT;
}

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	return host_exit(skb, from_netdev4(skb), DIR_INGRESS);
}

SEC("tc")
int to_netdev(struct __sk_buff *skb)
{
	return host_exit(skb, to_netdev4(skb), DIR_EGRESS);
}

/* Keep every map struct in BTF, for the layout test. */
struct nat4_key *__btf_nat4_key __attribute__((unused));
struct nat4_entry *__btf_nat4_entry __attribute__((unused));

char _license[] SEC("license") = "GPL";
