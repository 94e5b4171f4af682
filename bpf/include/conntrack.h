/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: connection tracking. Entries are keyed by the tuple of the connection's first
 * packet plus the scope that saw it (egress of the source endpoint, or ingress of the
 * destination endpoint): a connection between two local pods passes both policy points,
 * and each keeps its own entry, so the second one is never skipped because the first
 * created an entry. A packet matching a reversed tuple is a reply and needs no policy.
 */
#ifndef __HYPHA_CONNTRACK_H
#define __HYPHA_CONNTRACK_H

#include "common.h"

#define CT_SCOPE_EGRESS 1
#define CT_SCOPE_INGRESS 2

#define CT_F_SYN (1 << 0)
#define CT_F_ESTABLISHED (1 << 1)
#define CT_F_CLOSING (1 << 2)
#define CT_F_REPLY_SEEN (1 << 3)

struct ct_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct ct_entry {
	__u64 expires_ns;
	__u64 last_report_ns;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 cookie;
	__be16 proxy_port;
	__u8 flags;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key4);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_ct4 SEC(".maps");

/* Lifetimes in seconds, set at load time (defaults are Cilium's). */
const volatile __u32 ct_lifetime_tcp = 21600;
const volatile __u32 ct_lifetime_syn = 60;
const volatile __u32 ct_lifetime_closing = 10;
const volatile __u32 ct_lifetime_other = 60;
/* How often an established connection is reported again, seconds. */
const volatile __u32 ct_report_interval = 5;

#define NS_PER_SEC 1000000000ULL

/*
 * Conntrack's clock: CLOCK_MONOTONIC at tick resolution, which is plenty for lifetimes in
 * seconds. bpf_ktime_get_ns() reads the clocksource, a quarter of an established packet's
 * cost in a VM.
 */
__hy_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

__hy_inline __u64 __ct_lifetime(__u8 proto, __u8 flags)
{
	if (proto != IPPROTO_TCP)
		return ct_lifetime_other * NS_PER_SEC;
	if (flags & CT_F_CLOSING)
		return ct_lifetime_closing * NS_PER_SEC;
	if (flags & CT_F_ESTABLISHED)
		return ct_lifetime_tcp * NS_PER_SEC;
	return ct_lifetime_syn * NS_PER_SEC;
}

/*
 * A bare SYN opens a connection: policy, every time, whatever an entry of an earlier
 * connection with the same tuple says (closed connections' entries are not removed, and a
 * client reuses a tuple once its TIME_WAIT is over). Without this, a policy change would
 * not apply to a new connection on a reused tuple: an L4 allow that is now an L7 rule
 * would bypass the proxy, and the other way round the proxy would get a connection it
 * has no rule for. A retransmitted SYN is judged again, the same way.
 */
__hy_inline bool ct_opens(__u8 proto, __u8 tcp_flags)
{
	return proto == IPPROTO_TCP && (tcp_flags & 0x12) == 0x02;
}

/*
 * Whether an entry still stands for its connection. TCP's last until the tuple opens
 * again (ct_opens; a half-closed connection may stay quiet for long); others expire with
 * their lifetime, after which a packet is a new flow and policy decides again.
 */
__hy_inline bool ct_alive(const struct ct_entry *e, __u8 proto, __u64 now)
{
	return proto == IPPROTO_TCP || e->expires_ns > now;
}

__hy_inline void ct_reverse(const struct ct_key4 *k, struct ct_key4 *r, __u8 scope)
{
	r->saddr = k->daddr;
	r->daddr = k->saddr;
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
	r->scope = scope;
	r->pad[0] = 0;
	r->pad[1] = 0;
}

/*
 * Updates an entry for a packet seen at `now` in direction `reply` with TCP `tcp_flags`
 * (0 for other protocols). Returns true when the connection's state changed (worth an event).
 */
__hy_inline bool ct_update(struct ct_entry *e, __u8 proto, __u8 tcp_flags, bool reply, __u32 len, __u64 now)
{
	__u8 before = e->flags;

	/* Plain increments: an atomic per packet costs a cache-line bounce between CPUs on
	 * every segment of a stream, and these counters are for display, not accounting. */
	if (reply) {
		e->rx_packets++;
		e->rx_bytes += len;
		if (!(e->flags & CT_F_REPLY_SEEN))
			e->flags |= CT_F_REPLY_SEEN;
	} else {
		e->tx_packets++;
		e->tx_bytes += len;
	}
	if (proto == IPPROTO_TCP) {
		/* FIN or RST: the connection winds down. ACK with a reply seen: established. */
		if (tcp_flags & 0x05)
			e->flags |= CT_F_CLOSING;
		else if ((tcp_flags & 0x10) && (e->flags & CT_F_REPLY_SEEN))
			e->flags |= CT_F_ESTABLISHED;
	} else if (reply) {
		e->flags |= CT_F_ESTABLISHED;
	}
	/* Refresh the lifetime at most once a second: fewer writes to a shared line. */
	if (e->expires_ns < now + __ct_lifetime(proto, e->flags) - NS_PER_SEC || e->flags != before)
		e->expires_ns = now + __ct_lifetime(proto, e->flags);
	return e->flags != before;
}

#endif
