/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: events to the agent through one ring buffer. Every drop is reported; forwarded
 * traffic is reported per connection (new, state change, every report interval), never
 * per packet of an established flow. A record is a fixed header and the packet's first
 * bytes.
 */
#ifndef __HYPHA_EVENTS_H
#define __HYPHA_EVENTS_H

#include "common.h"

#define EVENT_CAPTURE_LEN 128

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
	__u8 pad;
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
	__be16 proxy_port;
};

/* Reports a packet. A full ring drops the event (the agent counts losses), never the packet. */
__hy_inline void event_emit(struct __sk_buff *skb, const struct event_info *i)
{
	struct event *ev = bpf_ringbuf_reserve(&hypha_events, sizeof(*ev), 0);
	__u32 cap = skb->len < EVENT_CAPTURE_LEN ? skb->len : EVENT_CAPTURE_LEN;

	if (!ev)
		return;
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->hdr.type = i->type;
	ev->hdr.subtype = i->subtype;
	ev->hdr.source = i->source;
	ev->hdr.src_identity = i->src_identity;
	ev->hdr.dst_identity = i->dst_identity;
	ev->hdr.ifindex = skb->ifindex;
	ev->hdr.cookie = i->cookie;
	ev->hdr.orig_len = skb->len;
	ev->hdr.verdict = i->verdict;
	ev->hdr.direction = i->direction;
	ev->hdr.ct_state = i->ct_state;
	ev->hdr.pad = 0;
	ev->hdr.proxy_port = i->proxy_port;
	__builtin_memset(ev->data, 0, sizeof(ev->data));
	/* The verifier needs a constant-bounded length: copy whole steps. */
	if (cap >= EVENT_CAPTURE_LEN) {
		bpf_skb_load_bytes(skb, 0, ev->data, EVENT_CAPTURE_LEN);
	} else if (cap >= 64) {
		bpf_skb_load_bytes(skb, 0, ev->data, 64);
		cap = 64;
	} else if (cap >= 34) {
		bpf_skb_load_bytes(skb, 0, ev->data, 34);
		cap = 34;
	} else {
		cap = 0;
	}
	ev->hdr.cap_len = cap;
	bpf_ringbuf_submit(ev, 0);
}

#endif
