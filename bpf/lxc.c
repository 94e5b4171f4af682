// SPDX-License-Identifier: GPL-2.0
/*
 * Endpoint programs, on the host side of each pod's veth:
 *   from_container  tc ingress: packets the pod sends (its egress policy)
 *   to_container    tc egress:  packets delivered to the pod (its ingress policy)
 * Each reads as the packet's steps: endpoint, parse, source check, conntrack, identity,
 * policy, report, deliver. The kernel's routing moves packets between veths and nodes.
 */
#include "include/common.h"
#include "include/drop.h"
#include "include/endpoints.h"
#include "include/ipcache.h"
#include "include/policy.h"
#include "include/conntrack.h"
#include "include/events.h"
#include "include/metrics.h"

#include <linux/tcp.h>
#include <linux/udp.h>
#include "include/icmp.h"

struct packet4 {
	struct ct_key4 tuple; /* scope left 0 */
	__be16 policy_port;   /* destination port, or the ICMP type */
	__u8 tcp_flags;
	__u8 icmp_type;
	/* For ICMP errors: the tuple of the packet the error is about. */
	struct ct_key4 inner;
	bool has_inner;
};

/* Parses Ethernet/IPv4/L4. Returns 0, a drop reason, or -1 for traffic to pass untouched. */
static __always_inline int parse4(struct __sk_buff *skb, struct packet4 *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 l4off;

	if ((void *)(eth + 1) > end)
		return DROP_INVALID_PACKET;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DROP_UNSUPPORTED_L3;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return DROP_INVALID_PACKET;
	if (ip->ihl < 5 || ip->version != 4)
		return DROP_INVALID_PACKET;
	/* Later fragments carry no ports: they cannot be matched to a connection. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return DROP_FRAG_NOT_SUPPORTED;
	p->tuple.saddr = ip->saddr;
	p->tuple.daddr = ip->daddr;
	p->tuple.proto = ip->protocol;
	l4off = sizeof(*eth) + ip->ihl * 4;

	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr th;

		if (bpf_skb_load_bytes(skb, l4off, &th, sizeof(th)) < 0)
			return DROP_CT_INVALID_HEADER;
		p->tuple.sport = th.source;
		p->tuple.dport = th.dest;
		p->policy_port = th.dest;
		p->tcp_flags = ((__u8 *)&th)[13];
		return 0;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		struct udphdr uh; /* SCTP's first 4 bytes are the ports too */

		if (bpf_skb_load_bytes(skb, l4off, &uh, 4) < 0)
			return DROP_CT_INVALID_HEADER;
		p->tuple.sport = uh.source;
		p->tuple.dport = uh.dest;
		p->policy_port = uh.dest;
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmp4hdr ih;

		if (bpf_skb_load_bytes(skb, l4off, &ih, sizeof(ih)) < 0)
			return DROP_CT_INVALID_HEADER;
		p->icmp_type = ih.type;
		p->policy_port = bpf_htons(ih.type);
		if (ih.type == ICMP_ECHO || ih.type == ICMP_ECHOREPLY) {
			/* Echo request and reply share the identifier: it stands for both ports. */
			p->tuple.sport = ih.echo_id;
			p->tuple.dport = ih.echo_id;
		} else if (ih.type == ICMP_DEST_UNREACH || ih.type == ICMP_TIME_EXCEEDED) {
			struct iphdr inner;
			__be16 ports[2];

			if (bpf_skb_load_bytes(skb, l4off + sizeof(ih), &inner, sizeof(inner)) < 0)
				return DROP_CT_INVALID_HEADER;
			if (bpf_skb_load_bytes(skb, l4off + sizeof(ih) + inner.ihl * 4, ports, sizeof(ports)) < 0)
				return DROP_CT_INVALID_HEADER;
			p->inner.saddr = inner.saddr;
			p->inner.daddr = inner.daddr;
			p->inner.proto = inner.protocol;
			p->inner.sport = ports[0];
			p->inner.dport = ports[1];
			p->has_inner = true;
		}
		return 0;
	}
	default:
		/* Other protocols: tracked and matched by protocol only. */
		return 0;
	}
}

static __always_inline int drop(struct __sk_buff *skb, struct event_info *ev, __u8 reason)
{
	ev->type = EVENT_DROP;
	ev->subtype = reason;
	ev->verdict = VERDICT_DROPPED;
	event_emit(skb, ev);
	metrics_count(reason, ev->direction, skb->len);
	return TC_ACT_SHOT;
}

/* An ICMP error about a tracked connection, in either scope. */
static __always_inline bool ct_related(struct packet4 *p)
{
	struct ct_key4 k = p->inner;

	if (!p->has_inner)
		return false;
	k.scope = CT_SCOPE_EGRESS;
	if (bpf_map_lookup_elem(&hypha_ct4, &k))
		return true;
	k.scope = CT_SCOPE_INGRESS;
	return bpf_map_lookup_elem(&hypha_ct4, &k) != NULL;
}

/*
 * The shared body: `egress` is true for from_container. Everything per endpoint comes
 * from the endpoint map, so one object serves every pod.
 */
static __always_inline int handle(struct __sk_buff *skb, bool egress)
{
	struct endpoint_info *ep = endpoint_lookup(skb->ifindex);
	struct event_info ev = { .direction = egress ? DIR_EGRESS : DIR_INGRESS };
	struct packet4 p = {};
	struct ct_key4 key, rkey;
	struct ct_entry *ct;
	struct policy_verdict v = {};
	__u8 scope = egress ? CT_SCOPE_EGRESS : CT_SCOPE_INGRESS;
	__u8 rscope = egress ? CT_SCOPE_INGRESS : CT_SCOPE_EGRESS;
	__u32 peer;
	int r;

	if (!ep)
		return drop(skb, &ev, DROP_NO_CONFIG);
	ev.source = ep->id;
	r = parse4(skb, &p);
	if (r < 0)
		return TC_ACT_OK;
	if (r > 0)
		return drop(skb, &ev, r);
	if (egress && p.tuple.saddr != ep->ip4) {
		ev.src_identity = ep->identity;
		return drop(skb, &ev, DROP_INVALID_SOURCE_IP);
	}
	/* Established or reply: no policy lookup, and no ipcache lookup either (the entry
	 * remembers both identities), so a packet of a known flow costs one hash lookup. */
	key = p.tuple;
	key.scope = scope;
	ct = bpf_map_lookup_elem(&hypha_ct4, &key);
	if (ct) {
		ev.ct_state = CT_ESTABLISHED;
	} else {
		ct_reverse(&p.tuple, &rkey, rscope);
		ct = bpf_map_lookup_elem(&hypha_ct4, &rkey);
		if (ct)
			ev.ct_state = CT_REPLY;
	}
	if (ct) {
		bool changed = ct_update(ct, p.tuple.proto, p.tcp_flags, ev.ct_state == CT_REPLY, skb->len);
		__u64 now = bpf_ktime_get_ns();

		/* The entry holds the identities of its first packet; a reply swaps them. */
		ev.src_identity = ev.ct_state == CT_REPLY ? ct->dst_identity : ct->src_identity;
		ev.dst_identity = ev.ct_state == CT_REPLY ? ct->src_identity : ct->dst_identity;
		if (changed || now - ct->last_report_ns > (__u64)ct_report_interval * NS_PER_SEC) {
			ct->last_report_ns = now;
			ev.type = EVENT_TRACE;
			ev.subtype = egress ? OBS_FROM_ENDPOINT : OBS_TO_ENDPOINT;
			ev.verdict = VERDICT_FORWARDED;
			ev.cookie = ct->cookie;
			event_emit(skb, &ev);
		}
		if (ct->proxy_port && ev.ct_state == CT_ESTABLISHED)
			skb->mark = MARK_MAGIC_TO_PROXY | ((__u32)bpf_ntohs(ct->proxy_port) << 16);
		metrics_count(0, ev.direction, skb->len);
		return TC_ACT_OK;
	}
	peer = ipcache_identity4(egress ? p.tuple.daddr : p.tuple.saddr);
	ev.src_identity = egress ? ep->identity : peer;
	ev.dst_identity = egress ? peer : ep->identity;
	if (ct_related(&p)) {
		ev.ct_state = CT_RELATED;
		metrics_count(0, ev.direction, skb->len);
		return TC_ACT_OK;
	}

	/* A new connection: policy, every time. */
	ev.ct_state = CT_NEW;
	if (ep->flags & (egress ? EP_ENFORCE_EGRESS : EP_ENFORCE_INGRESS)) {
		v = policy_decide(ep->id, egress, ep->identity, peer, p.tuple.proto, p.policy_port);
		ev.cookie = v.cookie;
		if (v.drop) {
			ev.type = EVENT_POLICY_VERDICT;
			ev.subtype = 0;
			ev.verdict = VERDICT_DROPPED;
			event_emit(skb, &ev);
			return drop(skb, &ev, v.drop);
		}
	}
	/* Echo replies and ICMP errors that match nothing must not open connections. */
	if (p.tuple.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO) {
		metrics_count(0, ev.direction, skb->len);
		return TC_ACT_OK;
	}
	{
		struct ct_entry fresh = {
			.src_identity = ev.src_identity,
			.dst_identity = ev.dst_identity,
			.cookie = v.cookie,
			.proxy_port = (v.flags & POLICY_REDIRECT) ? v.proxy_port : 0,
			.last_report_ns = bpf_ktime_get_ns(),
		};

		ct_update(&fresh, p.tuple.proto, p.tcp_flags, false, skb->len);
		if (p.tuple.proto == IPPROTO_TCP && (p.tcp_flags & 0x02))
			fresh.flags |= CT_F_SYN;
		if (bpf_map_update_elem(&hypha_ct4, &key, &fresh, BPF_ANY) < 0)
			return drop(skb, &ev, DROP_CT_CREATE_FAILED);
	}
	ev.type = EVENT_POLICY_VERDICT;
	ev.verdict = (v.flags & POLICY_REDIRECT) ? VERDICT_REDIRECTED : VERDICT_FORWARDED;
	ev.proxy_port = (v.flags & POLICY_REDIRECT) ? v.proxy_port : 0;
	event_emit(skb, &ev);
	ev.type = EVENT_TRACE;
	ev.subtype = (v.flags & POLICY_REDIRECT) ? OBS_TO_PROXY : (egress ? OBS_FROM_ENDPOINT : OBS_TO_ENDPOINT);
	event_emit(skb, &ev);
	if (v.flags & POLICY_REDIRECT)
		skb->mark = MARK_MAGIC_TO_PROXY | ((__u32)bpf_ntohs(v.proxy_port) << 16);
	metrics_count(0, ev.direction, skb->len);
	return TC_ACT_OK;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	return handle(skb, true);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return handle(skb, false);
}

/* Keep every map struct in BTF, for the layout test. */
struct endpoint_info *__btf_endpoint_info __attribute__((unused));
struct ipcache_info *__btf_ipcache_info __attribute__((unused));
struct event *__btf_event __attribute__((unused));

char _license[] SEC("license") = "GPL";
