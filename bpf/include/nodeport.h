/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: NodePort, external IP and LoadBalancer frontends for packets from outside the node,
 * translated per packet on the node's external device (no socket hook ran for them).
 *   nodeport4_fwd      a packet to a frontend: pinned to its backend (nat.h's forward
 *                      entry) or a new choice by lb.h's lb4_select_backend (ClientIP
 *                      affinity keyed by the client's address, maglev, random) from the
 *                      external scope; DNAT, and SNAT to the node when the backend is on
 *                      another node and externalTrafficPolicy is Cluster
 *   nodeport4_rev_snat a reply from a remote backend to the node's port: back to the client
 *   nodeport4_rev_dnat a reply from a local backend leaving the node: from the frontend
 * Source-translated packets leave straight through the FIB's device (bpf_redirect): the
 * stack would drop a packet arriving with one of its own addresses as source.
 */
#ifndef __HYPHA_NODEPORT_H
#define __HYPHA_NODEPORT_H

#include "common.h"
#include "drop.h"
#include "lb.h"
#include "nat.h"

#ifndef AF_INET
#define AF_INET 2
#endif


/* The node's address and its external device, set at load time. */
const volatile __be32 nodeport_ip4 = 0;
const volatile __u32 nodeport_ifindex = 0;

/* Frontends that outside traffic may reach; ClusterIPs stay inside the cluster. */
#define NODEPORT_SVC_FLAGS (SVC_F_NODEPORT | SVC_F_EXTERNAL_IP | SVC_F_LOADBALANCER)

/* nodeport4_rev_snat: the packet is not a reply of a source-translated connection. */
#define NODEPORT_NO_MATCH -1

struct nodeport4_packet {
	struct nat4_key tuple; /* dir NAT_DIR_FWD */
	__u32 l4off;
	__u8 tcp_flags;
};

/* Where the FIB sends a packet from saddr to daddr that came in on the external device. */
__hy_inline long nodeport4_fib(struct __sk_buff *skb, __be32 saddr, __be32 daddr, __u8 proto,
			       struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = proto;
	fib->ifindex = skb->ingress_ifindex;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* A backend the FIB reaches through the external device lives on another node. */
__hy_inline bool nodeport4_backend_remote(struct __sk_buff *skb, const struct nodeport4_packet *p,
					  __be32 backend)
{
	struct bpf_fib_lookup fib;
	long rc = nodeport4_fib(skb, p->tuple.saddr, backend, p->tuple.proto, &fib);

	return (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) &&
	       fib.ifindex == nodeport_ifindex;
}

/* Sends a rewritten packet out of the FIB's device, resolving the neighbour if need be. */
__hy_inline int nodeport4_redirect(struct __sk_buff *skb, __be32 saddr, __be32 daddr, __u8 proto)
{
	struct bpf_fib_lookup fib;
	long rc = nodeport4_fib(skb, saddr, daddr, proto, &fib);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib.dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib.smac, ETH_ALEN, 0) < 0)
			return DROP_WRITE_ERROR;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	return DROP_NO_FIB;
}

/* Rewrites both sides of p to `to` (only what differs changes). */
__hy_inline int nodeport4_rewrite(struct __sk_buff *skb, const struct nodeport4_packet *p,
				  const struct nat4_entry *to)
{
	int r = nat4_rewrite(skb, p->l4off, p->tuple.proto, false, p->tuple.daddr, to->daddr, p->tuple.dport,
			     to->dport);

	if (r)
		return r;
	return nat4_rewrite(skb, p->l4off, p->tuple.proto, true, p->tuple.saddr, to->saddr, p->tuple.sport,
			    to->sport);
}

/* What the backend's replies must be turned back into: from the frontend to the client. */
__hy_inline void __nodeport4_reply_of(const struct nodeport4_packet *p, const struct nat4_entry *fwd,
				      struct nat4_entry *rev)
{
	__builtin_memset(rev, 0, sizeof(*rev));
	rev->saddr = p->tuple.daddr;
	rev->sport = p->tuple.dport;
	rev->daddr = p->tuple.saddr;
	rev->dport = p->tuple.sport;
	rev->rev_nat_index = fwd->rev_nat_index;
	rev->backend_id = fwd->backend_id;
	rev->flags = fwd->flags & NAT_F_SNAT;
}

/*
 * A forward entry still holds when it is young enough, of the same service (a frontend
 * deleted and created again has a new rev-NAT index), and its backend is still there: an
 * id may have been freed and reused for another address. A terminating backend keeps the
 * connections it has.
 */
__hy_inline bool __nodeport4_fwd_valid(const struct nat4_entry *fwd, const struct lb4_service *svc, __u64 now)
{
	struct lb4_backend *be;

	if (fwd->rev_nat_index != svc->rev_nat_index || now > fwd->expires_ns)
		return false;
	be = lb4_lookup_backend(fwd->backend_id);
	return be && be->address == fwd->daddr && be->port == fwd->dport && be->state != BE_STATE_QUARANTINED;
}

/*
 * A new connection: picks a backend and writes both entries into *out's shape. Two CPUs may
 * race on a connection's first packets (a UDP burst): the forward entry is inserted with
 * BPF_NOEXIST, and the loser takes the winner's entry. Returns 0 or a drop reason.
 */
__hy_inline int __nodeport4_new(struct __sk_buff *skb, const struct nodeport4_packet *p, struct lb4_key *key,
				const struct lb4_service *svc, __u64 now, struct nat4_entry *out)
{
	struct lb4_client client = { .saddr = p->tuple.saddr, .sport = p->tuple.sport, .proto = p->tuple.proto };
	struct nat4_key fkey = p->tuple, rkey = {};
	struct nat4_entry fwd = {}, rev, *cur;
	struct lb4_affinity_key ak;
	struct lb4_backend *be;
	__u32 id = 0;

	if (!svc->count)
		return DROP_NO_SERVICE;
	lb4_affinity_by_addr(&ak, p->tuple.saddr);
	be = lb4_select_backend(key, svc, &client, &ak, &id);
	if (!be)
		return DROP_NO_SERVICE;
	fwd.saddr = p->tuple.saddr;
	fwd.sport = p->tuple.sport;
	fwd.daddr = be->address;
	fwd.dport = be->port;
	fwd.rev_nat_index = svc->rev_nat_index;
	fwd.backend_id = id;
	fwd.expires_ns = now + nat4_lifetime(p->tuple.proto, 0);
	/* Local traffic policy keeps the client's address, so only local backends can answer. */
	if (!(svc->flags & SVC_F_EXT_LOCAL_SCOPE) && nodeport4_backend_remote(skb, p, be->address)) {
		fwd.flags = NAT_F_SNAT;
		fwd.saddr = nodeport_ip4;
	}
	__nodeport4_reply_of(p, &fwd, &rev);
	nat4_rev_key(&fwd, p->tuple.proto, &rkey);
	if (fwd.flags & NAT_F_SNAT) {
		fwd.sport = nat4_alloc_port(&rkey, &rev);
		if (!fwd.sport)
			return DROP_NAT_NO_MAPPING;
		if (bpf_map_update_elem(&hypha_nat4, &fkey, &fwd, BPF_NOEXIST) < 0)
			goto lost;
	} else {
		if (bpf_map_update_elem(&hypha_nat4, &fkey, &fwd, BPF_NOEXIST) < 0)
			goto lost;
		if (bpf_map_update_elem(&hypha_nat4, &rkey, &rev, BPF_ANY) < 0) {
			bpf_map_delete_elem(&hypha_nat4, &fkey);
			return DROP_CT_CREATE_FAILED;
		}
	}
	*out = fwd;
	return 0;
lost:
	/* Only an allocated port is ours to give back: a plain reverse entry was not written. */
	if (fwd.flags & NAT_F_SNAT)
		bpf_map_delete_elem(&hypha_nat4, &rkey);
	cur = bpf_map_lookup_elem(&hypha_nat4, &fkey);
	if (!cur)
		return DROP_CT_CREATE_FAILED;
	*out = *cur;
	return 0;
}

/*
 * A packet of an existing connection: refreshes the entry (at most once a second) and puts
 * a reverse entry the LRU evicted back, so replies keep flowing.
 */
__hy_inline void __nodeport4_established(const struct nodeport4_packet *p, struct nat4_entry *fwd, __u64 now)
{
	struct nat4_entry rev;
	struct nat4_key rkey;
	__u64 lifetime;

	if (p->tuple.proto == IPPROTO_TCP && (p->tcp_flags & 0x05) && !(fwd->flags & NAT_F_CLOSING))
		fwd->flags |= NAT_F_CLOSING;
	lifetime = nat4_lifetime(p->tuple.proto, fwd->flags);
	if (fwd->expires_ns + NAT_NS_PER_SEC < now + lifetime || fwd->expires_ns > now + lifetime)
		fwd->expires_ns = now + lifetime;
	nat4_rev_key(fwd, p->tuple.proto, &rkey);
	if (bpf_map_lookup_elem(&hypha_nat4, &rkey))
		return;
	__nodeport4_reply_of(p, fwd, &rev);
	bpf_map_update_elem(&hypha_nat4, &rkey, &rev, BPF_ANY);
}

/*
 * A packet from outside to a frontend of this node: translated to its backend. Returns
 * TC_ACT_OK (not a frontend, or DNAT only: the stack delivers it), the verdict of a
 * redirect (source translated too), or a drop reason.
 */
__hy_inline int nodeport4_fwd(struct __sk_buff *skb, const struct nodeport4_packet *p)
{
	struct lb4_key key = {
		.address = p->tuple.daddr,
		.dport = p->tuple.dport,
		.proto = p->tuple.proto,
		.scope = LB_LOOKUP_SCOPE_EXT,
	};
	struct nat4_entry to, *fwd;
	struct lb4_service *svc;
	__u64 now;
	int r;

	svc = bpf_map_lookup_elem(&hypha_lb4_services, &key);
	if (!svc || !(svc->flags & NODEPORT_SVC_FLAGS))
		return TC_ACT_OK;
	now = bpf_ktime_get_coarse_ns();
	fwd = bpf_map_lookup_elem(&hypha_nat4, &p->tuple);
	if (fwd && __nodeport4_fwd_valid(fwd, svc, now)) {
		__nodeport4_established(p, fwd, now);
		to = *fwd;
	} else {
		if (fwd) {
			struct nat4_key stale;

			/* The old reverse entry would turn the new backend's replies into nothing. */
			nat4_rev_key(fwd, p->tuple.proto, &stale);
			bpf_map_delete_elem(&hypha_nat4, &stale);
			bpf_map_delete_elem(&hypha_nat4, &p->tuple);
		}
		r = __nodeport4_new(skb, p, &key, svc, now, &to);
		if (r)
			return r;
	}
	r = nodeport4_rewrite(skb, p, &to);
	if (r)
		return r;
	if (to.flags & NAT_F_SNAT)
		return nodeport4_redirect(skb, to.saddr, to.daddr, p->tuple.proto);
	return TC_ACT_OK;
}

/*
 * A packet to the node's own address: a remote backend's reply to a source-translated
 * connection goes back to the client, from the frontend. Returns NODEPORT_NO_MATCH for
 * anything else.
 */
__hy_inline int nodeport4_rev_snat(struct __sk_buff *skb, const struct nodeport4_packet *p)
{
	struct nat4_key rkey = p->tuple;
	struct nat4_entry to, *rev;
	int r;

	rkey.dir = NAT_DIR_REV;
	rev = bpf_map_lookup_elem(&hypha_nat4, &rkey);
	if (!rev || !(rev->flags & NAT_F_SNAT))
		return NODEPORT_NO_MATCH;
	to = *rev;
	r = nodeport4_rewrite(skb, p, &to);
	if (r)
		return r;
	return nodeport4_redirect(skb, to.saddr, to.daddr, p->tuple.proto);
}

/* A local backend's reply leaving the node: its source becomes the frontend. Returns 0 or a drop reason. */
__hy_inline int nodeport4_rev_dnat(struct __sk_buff *skb, const struct nodeport4_packet *p)
{
	struct nat4_key rkey = p->tuple;
	struct nat4_entry *rev;
	__be32 saddr;
	__be16 sport;

	rkey.dir = NAT_DIR_REV;
	rev = bpf_map_lookup_elem(&hypha_nat4, &rkey);
	if (!rev || (rev->flags & NAT_F_SNAT))
		return 0;
	saddr = rev->saddr;
	sport = rev->sport;
	return nat4_rewrite(skb, p->l4off, p->tuple.proto, true, p->tuple.saddr, saddr, p->tuple.sport, sport);
}

#endif
