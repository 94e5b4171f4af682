// SPDX-License-Identifier: GPL-2.0
/*
 * Socket-level load balancing, on the cgroup hooks of the node's (or a test's) cgroup:
 *   sock4_connect      connect(): TCP and connected UDP, translated once for the socket's life
 *   sock4_sendmsg      sendmsg() with an address: unconnected UDP, per datagram
 *   sock4_recvmsg      recvmsg() on UDP: a backend's reply shows the service as its source
 *   sock4_getpeername  getpeername(): a translated socket's peer is the service
 * A destination that is no service costs one hash lookup. Established traffic carries no
 * per-packet NAT: the socket talks to the backend itself. A service without an active
 * backend fails connect()/sendmsg() at once with EHOSTUNREACH (as Cilium does) and
 * reports a drop (158) on the shared events ring.
 */
#include "include/common.h"
#include "include/events.h"
#include "include/lb.h"

#include <asm-generic/errno.h>

#define SYS_REJECT 0
#define SYS_PROCEED 1

char LICENSE[] SEC("license") = "GPL";

/* There is no packet: the record is the header alone, its packet bytes empty. */
static __always_inline void sock4_emit_drop(__u8 reason)
{
	struct event_hdr *ev = bpf_ringbuf_reserve(&hypha_events, sizeof(*ev), 0);

	if (!ev)
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->type = EVENT_DROP;
	ev->subtype = reason;
	ev->src_identity = ID_UNKNOWN;
	ev->dst_identity = ID_UNKNOWN;
	ev->verdict = VERDICT_DROPPED;
	ev->direction = DIR_EGRESS;
	ev->ct_state = CT_NEW;
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

static __always_inline bool sock4_proto_supported(const struct bpf_sock_addr *ctx)
{
	return ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP;
}

/*
 * Rewrites the destination of ctx to a backend when it is a service frontend. Returns 0
 * (translated or not a service) or a negative errno for the syscall.
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, bool sendmsg)
{
	struct lb4_key key = {
		.address = ctx->user_ip4,
		.dport = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct lb4_client client = { .proto = (__u8)ctx->protocol };
	struct lb4_affinity_key ak;
	struct lb4_service *svc;
	struct lb4_backend *be;
	struct bpf_sock *sk;
	__u32 id;

	if (!sock4_proto_supported(ctx))
		return 0;
	svc = lb4_lookup_service(&key);
	if (!svc)
		return 0;
	if (!svc->count) {
		sock4_emit_drop(DROP_NO_SERVICE);
		return -EHOSTUNREACH;
	}
	sk = ctx->sk;
	if (sk) {
		client.saddr = sk->src_ip4;
		client.sport = bpf_htons((__u16)sk->src_port);
	}
	if (sendmsg && ctx->msg_src_ip4)
		client.saddr = ctx->msg_src_ip4;
	client.netns_cookie = bpf_get_netns_cookie(ctx);

	lb4_affinity_by_netns(&ak, client.netns_cookie);
	be = lb4_select_backend(&key, svc, &client, &ak, &id);
	if (!be) {
		sock4_emit_drop(DROP_NO_SERVICE);
		return -EHOSTUNREACH;
	}
	if (lb4_sock_revnat_update(bpf_get_socket_cookie(ctx), be, &key, svc->rev_nat_index) < 0)
		return -ENOMEM;
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	return 0;
}

static __always_inline int sock4_reject(int err)
{
	bpf_set_retval(err);
	return SYS_REJECT;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	int err = sock4_xlate_fwd(ctx, false);

	return err ? sock4_reject(err) : SYS_PROCEED;
}

SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	int err;

	if (ctx->protocol != IPPROTO_UDP)
		return SYS_PROCEED;
	err = sock4_xlate_fwd(ctx, true);
	return err ? sock4_reject(err) : SYS_PROCEED;
}

/* The peer in ctx is a backend this socket was sent to: show the service instead. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_revnat_entry *v;

	if (!sock4_proto_supported(ctx))
		return;
	v = lb4_sock_revnat_lookup(bpf_get_socket_cookie(ctx), ctx->user_ip4, (__be16)ctx->user_port,
				   (__u8)ctx->protocol);
	if (!v)
		return;
	ctx->user_ip4 = v->address;
	ctx->user_port = v->port;
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}
