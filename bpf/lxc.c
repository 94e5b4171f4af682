// SPDX-License-Identifier: GPL-2.0
/*
 * Endpoint programs, on the host side of each pod's veth:
 *   from_container  tc ingress: packets the pod sends (its egress policy)
 *   to_container    tc egress:  packets delivered to the pod (its ingress policy)
 * Each reads as the packet's steps: endpoint, parse, source check, conntrack, identity,
 * policy, report, deliver; one exit turns a drop reason into a drop event. The kernel's
 * routing moves packets between veths and nodes.
 */
#include "include/common.h"
#include "include/drop.h"
#include "include/endpoints.h"
#include "include/ipcache.h"
#include "include/policy.h"
#include "include/conntrack.h"
#include "include/events.h"
#include "include/metrics.h"
#include "include/dnsproxy.h"
#include "include/proxy.h"

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

/* parse4: traffic let through without conntrack or counting (ARP). */
#define PASS_UNTOUCHED -1

/*
 * Parses Ethernet/IPv4/L4. Returns 0, a drop reason, or PASS_UNTOUCHED. TCP and UDP
 * headers are read in place when the linear data holds them (every veth packet in
 * practice), without a helper call; otherwise copied.
 */
static __always_inline int parse4(struct __sk_buff *skb, struct packet4 *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;
	__u32 l4off;

	if ((void *)(eth + 1) > end)
		return DROP_INVALID_PACKET;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return PASS_UNTOUCHED;
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
	l4 = data + l4off;

	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4, copy;

		if ((void *)(th + 1) > end) {
			if (bpf_skb_load_bytes(skb, l4off, &copy, sizeof(copy)) < 0)
				return DROP_CT_INVALID_HEADER;
			th = &copy;
		}
		p->tuple.sport = th->source;
		p->tuple.dport = th->dest;
		p->policy_port = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return 0;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 *ports = l4, copy[2]; /* SCTP's first 4 bytes are the ports too */

		if ((void *)(ports + 2) > end) {
			if (bpf_skb_load_bytes(skb, l4off, copy, sizeof(copy)) < 0)
				return DROP_CT_INVALID_HEADER;
			ports = copy;
		}
		p->tuple.sport = ports[0];
		p->tuple.dport = ports[1];
		p->policy_port = ports[1];
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

/* A packet of a tracked connection: no policy and no ipcache lookup (the entry remembers
 * both identities), so it costs the conntrack lookups and an event only on a state change
 * or once per report interval. */
static __always_inline int established(struct __sk_buff *skb, struct ct_entry *ct, struct packet4 *p,
				       struct event_info *ev, bool egress, __u64 now)
{
	bool reply = ev->ct_state == CT_REPLY;
	bool changed = ct_update(ct, p->tuple.proto, p->tcp_flags, reply, skb->len, now);
	bool to_proxy = ct->proxy_port && (!reply || proxy_upstream_reply(skb, egress));

	/* The entry holds the identities of its first packet; a reply swaps them. */
	ev->src_identity = reply ? ct->dst_identity : ct->src_identity;
	ev->dst_identity = reply ? ct->src_identity : ct->dst_identity;
	if (changed || now - ct->last_report_ns > (__u64)ct_report_interval * NS_PER_SEC) {
		ct->last_report_ns = now;
		ev->type = EVENT_TRACE;
		ev->subtype = event_trace_point(egress, to_proxy);
		ev->verdict = VERDICT_FORWARDED;
		ev->cookie = ct->cookie;
		event_emit(skb, ev);
	}
	if (to_proxy)
		skb->mark = MARK_MAGIC_TO_PROXY | ((__u32)bpf_ntohs(ct->proxy_port) << 16);
	return 0;
}

/*
 * The shared body: `egress` is true for from_container. Everything per endpoint comes
 * from the endpoint map, so one object serves every pod. Returns 0 to forward the packet,
 * PASS_UNTOUCHED, or a drop reason, which the caller reports.
 */
static __always_inline int handle(struct __sk_buff *skb, struct event_info *ev, bool egress)
{
	struct endpoint_info *ep = endpoint_lookup(skb->ifindex);
	struct packet4 p = {};
	struct ct_key4 key, rkey;
	struct ct_entry *ct;
	struct policy_verdict v = {};
	__u8 scope = egress ? CT_SCOPE_EGRESS : CT_SCOPE_INGRESS;
	__u8 rscope = egress ? CT_SCOPE_INGRESS : CT_SCOPE_EGRESS;
	bool to_proxy, opens;
	__u64 now;
	__u32 peer;
	int r;

	if (!ep)
		return DROP_NO_CONFIG;
	ev->source = ep->id;
	r = parse4(skb, &p);
	if (r)
		return r;
	if (egress && p.tuple.saddr != ep->ip4) {
		ev->src_identity = ep->identity;
		return DROP_INVALID_SOURCE_IP;
	}
	now = ct_now();
	key = p.tuple;
	key.scope = scope;
	ct_reverse(&p.tuple, &rkey, rscope);
	opens = ct_opens(p.tuple.proto, p.tcp_flags);
	if (!opens) {
		ct = bpf_map_lookup_elem(&hypha_ct4, &key);
		if (ct && ct_alive(ct, p.tuple.proto, now)) {
			ev->ct_state = CT_ESTABLISHED;
			return established(skb, ct, &p, ev, egress, now);
		}
		ct = bpf_map_lookup_elem(&hypha_ct4, &rkey);
		if (ct && ct_alive(ct, p.tuple.proto, now)) {
			ev->ct_state = CT_REPLY;
			return established(skb, ct, &p, ev, egress, now);
		}
	}
	peer = proxy_peer_identity(skb, egress, ipcache_identity4(egress ? p.tuple.daddr : p.tuple.saddr));
	ev->src_identity = egress ? ep->identity : peer;
	ev->dst_identity = egress ? peer : ep->identity;
	if (ct_related(&p)) {
		ev->ct_state = CT_RELATED;
		return 0;
	}

	/* A new connection: policy, every time. */
	ev->ct_state = CT_NEW;
	if ((ep->flags & (egress ? EP_ENFORCE_EGRESS : EP_ENFORCE_INGRESS)) && !proxy_enforced(skb, egress)) {
		v = policy_decide(ep->id, egress, ep->identity, peer, p.tuple.proto, p.policy_port);
		ev->cookie = v.cookie;
		if (v.drop) {
			ev->type = EVENT_POLICY_VERDICT;
			ev->subtype = 0;
			ev->verdict = VERDICT_DROPPED;
			event_emit(skb, ev);
			return v.drop;
		}
	}
	/* Echo replies and ICMP errors that match nothing must not open connections. */
	if (p.tuple.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO)
		return 0;
	to_proxy = v.flags & POLICY_REDIRECT;
	/* A connection the other way that had this tuple is over: its replies would be this one's. */
	if (opens)
		bpf_map_delete_elem(&hypha_ct4, &rkey);
	{
		struct ct_entry fresh = {
			.src_identity = ev->src_identity,
			.dst_identity = ev->dst_identity,
			.cookie = v.cookie,
			.proxy_port = to_proxy ? v.proxy_port : 0,
			.last_report_ns = now,
		};

		ct_update(&fresh, p.tuple.proto, p.tcp_flags, false, skb->len, now);
		if (p.tuple.proto == IPPROTO_TCP && (p.tcp_flags & 0x02))
			fresh.flags |= CT_F_SYN;
		if (bpf_map_update_elem(&hypha_ct4, &key, &fresh, BPF_ANY) < 0)
			return DROP_CT_CREATE_FAILED;
	}
	/* The verdict and the trace of the first packet, in one record. */
	ev->type = EVENT_POLICY_VERDICT;
	ev->subtype = event_trace_point(egress, to_proxy);
	ev->flags = EVENT_F_TRACE;
	ev->verdict = to_proxy ? VERDICT_REDIRECTED : VERDICT_FORWARDED;
	ev->proxy_port = to_proxy ? v.proxy_port : 0;
	event_emit(skb, ev);
	if (to_proxy)
		skb->mark = MARK_MAGIC_TO_PROXY | ((__u32)bpf_ntohs(v.proxy_port) << 16);
	return 0;
}

/* The one exit: a drop reason becomes a drop event; every packet is counted. */
static __always_inline int endpoint_program(struct __sk_buff *skb, bool egress)
{
	struct event_info ev = { .direction = egress ? DIR_EGRESS : DIR_INGRESS };
	int r = egress ? 0 : dnsproxy_from_proxy4(skb);

	if (!r)
		r = handle(skb, &ev, egress);
	if (!r && egress)
		r = dnsproxy_to_proxy4(skb, ev.source, ev.dst_identity);
	if (!r)
		r = proxy_redirect4(skb, egress);
	if (r == PROXY_HAIRPIN) {
		metrics_count(0, ev.direction, skb->len);
		return TC_ACT_REDIRECT;
	}

	if (r == PASS_UNTOUCHED)
		return TC_ACT_OK;
	metrics_count(r, ev.direction, skb->len);
	if (!r)
		return TC_ACT_OK;
	ev.type = EVENT_DROP;
	ev.subtype = r;
	ev.verdict = VERDICT_DROPPED;
	ev.flags = 0;
	event_emit(skb, &ev);
	return TC_ACT_SHOT;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	if (proxy_hairpinned(skb))
		return proxy_deliver4(skb);
	return endpoint_program(skb, true);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return endpoint_program(skb, false);
}

/* Keep every map struct in BTF, for the layout test. */
struct endpoint_info *__btf_endpoint_info __attribute__((unused));
struct ipcache_info *__btf_ipcache_info __attribute__((unused));
struct event *__btf_event __attribute__((unused));

char _license[] SEC("license") = "GPL";
