/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: events to the agent through one ring buffer. Every drop is reported; forwarded
 * traffic is reported per connection (new, state change, every report interval), never
 * per packet of an established flow. A record is a fixed header and the packet's first
 * bytes, sized to what was captured.
 *
 * A new connection's policy verdict and its trace are one record (EVENT_F_TRACE): the
 * agent's decoder turns it back into both.
 */
#ifndef __HYPHA_EVENTS_H
#define __HYPHA_EVENTS_H

#include "common.h"

#define EVENT_CAPTURE_LEN 128

/* The record stands for a trace event of the same packet as well (see event_trace_point). */
#define EVENT_F_TRACE (1 << 0)

/*
 * Forwarded traffic wakes the agent once per this many bytes written while it sleeps, not
 * once per record: a wakeup is an irq_work (an IPI, a VM exit under virtualization) and a
 * thread switch in the agent, which cost a connect/request/close loop a quarter of its
 * rate. The agent polls with a timeout, so a quiet ring is read anyway. Drops wake it at
 * once: they are rare and wanted now (a wakeup already pending absorbs a flood of them).
 */
#define EVENT_WAKEUP_BYTES (64 << 10)

struct event_hdr {
	__u64 ts_ns;
	__u8 type;
	/* Drop reason for drops, observation point for traces. */
	__u8 subtype;
	__u16 source;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u32 cookie;
	__u32 orig_len;
	__u16 cap_len;
	__u8 verdict;
	__u8 direction;
	__u8 ct_state;
	__u8 flags;
	__be16 proxy_port;
};

struct event {
	struct event_hdr hdr;
	__u8 data[EVENT_CAPTURE_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_events SEC(".maps");

/* Events the ring had no room for, per CPU: the agent reports them as lost events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_events_lost SEC(".maps");

struct event_info {
	__u8 type;
	__u8 subtype;
	__u16 source;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 cookie;
	__u8 verdict;
	__u8 direction;
	__u8 ct_state;
	__u8 flags;
	__be16 proxy_port;
};

/* The observation point of the trace event a record with EVENT_F_TRACE stands for. */
__hy_inline __u8 event_trace_point(bool egress, bool to_proxy)
{
	return to_proxy ? OBS_TO_PROXY : egress ? OBS_FROM_ENDPOINT : OBS_TO_ENDPOINT;
}

/* `cap` is a constant after inlining: the verifier needs constant sizes for both calls. */
__hy_inline void __event_emit(struct __sk_buff *skb, const struct event_info *i, __u32 cap)
{
	struct event *ev = bpf_ringbuf_reserve(&hypha_events, sizeof(ev->hdr) + cap, 0);
	__u64 avail, size = (sizeof(ev->hdr) + cap + 8 + 7) & ~7;

	if (!ev) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&hypha_events_lost, &zero);

		if (lost)
			(*lost)++;
		return;
	}
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->hdr.type = i->type;
	ev->hdr.subtype = i->subtype;
	ev->hdr.source = i->source;
	ev->hdr.src_identity = i->src_identity;
	ev->hdr.dst_identity = i->dst_identity;
	ev->hdr.ifindex = skb->ifindex;
	ev->hdr.cookie = i->cookie;
	ev->hdr.orig_len = skb->len;
	ev->hdr.cap_len = cap;
	ev->hdr.verdict = i->verdict;
	ev->hdr.direction = i->direction;
	ev->hdr.ct_state = i->ct_state;
	ev->hdr.flags = i->flags;
	ev->hdr.proxy_port = i->proxy_port;
	if (cap)
		bpf_skb_load_bytes(skb, 0, ev->data, cap);
	if (i->type == EVENT_DROP) {
		bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
		return;
	}
	/* Unread bytes include this record (reserved, not yet submitted): wake when they cross
	 * a multiple of EVENT_WAKEUP_BYTES. */
	avail = bpf_ringbuf_query(&hypha_events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(ev, avail / EVENT_WAKEUP_BYTES != (avail - size) / EVENT_WAKEUP_BYTES
				       ? BPF_RB_FORCE_WAKEUP
				       : BPF_RB_NO_WAKEUP);
}

/* Reports a packet. A full ring drops the event (the agent counts losses), never the packet. */
__hy_inline void event_emit(struct __sk_buff *skb, const struct event_info *i)
{
	if (skb->len >= EVENT_CAPTURE_LEN)
		__event_emit(skb, i, EVENT_CAPTURE_LEN);
	else if (skb->len >= 64)
		__event_emit(skb, i, 64);
	else if (skb->len >= 54) /* Ethernet, IPv4 and a TCP header: flags and ports */
		__event_emit(skb, i, 54);
	else if (skb->len >= 42) /* Ethernet, IPv4 and a UDP header: small datagrams keep their ports */
		__event_emit(skb, i, 42);
	else if (skb->len >= 34)
		__event_emit(skb, i, 34);
	else
		__event_emit(skb, i, 0);
}

#endif
