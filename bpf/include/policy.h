/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: policy verdicts. One global LPM trie holds every endpoint's entries. The key's
 * data is laid out so that the endpoint, the direction and the peer identity are always
 * matched (64 bits), then the protocol (8 bits, a zero pad byte) and the destination port
 * (16 bits, network order): a prefix length expresses "any protocol", "any port" and
 * aligned port ranges, exactly the entries the policy engine produces. One map instead of
 * one per endpoint keeps a new endpoint to a few map writes.
 *
 * Lookups: one for the peer's identity and one for "any" (identity 0). A deny from either
 * wins (the agent turns an allow covered by a deny of the same identity into a deny, so
 * the longest match never hides a deny); otherwise the longer match wins, the exact
 * identity on a tie.
 */
#ifndef __HYPHA_POLICY_H
#define __HYPHA_POLICY_H

#include "common.h"
#include "drop.h"

#define POLICY_PREFIX_STATIC 64 /* endpoint, direction, pad, identity */
#define POLICY_PREFIX_FULL 96

#define POLICY_DENY (1 << 0)
#define POLICY_REDIRECT (1 << 1)
#define POLICY_AUTH (1 << 2)

struct policy_key {
	__u32 prefixlen;
	__u16 endpoint;
	__u8 egress;
	__u8 pad1;
	__u32 identity;
	__u8 protocol;
	__u8 pad2;
	__be16 dport;
};

struct policy_entry {
	__u32 cookie;
	__be16 proxy_port;
	__u8 flags;
	__u8 auth_type;
	/* The entry's own prefix length, to compare the two lookups. */
	__u8 prefixlen;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_policy SEC(".maps");

struct auth_key {
	__u32 local_identity;
	__u32 remote_identity;
	__u16 remote_node;
	__u8 auth_type;
	__u8 pad;
};

struct auth_info {
	__u64 expiration_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct auth_key);
	__type(value, struct auth_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_auth SEC(".maps");

struct policy_verdict {
	/* 0 to pass, else a drop reason. */
	int drop;
	__u32 cookie;
	__be16 proxy_port;
	__u8 flags;
};

__hy_inline struct policy_entry *__policy_lookup(__u16 ep, __u8 egress, __u32 identity, __u8 proto, __be16 dport)
{
	struct policy_key k = {
		.prefixlen = POLICY_PREFIX_FULL,
		.endpoint = ep,
		.egress = egress,
		.identity = identity,
		.protocol = proto,
		.dport = dport,
	};

	return bpf_map_lookup_elem(&hypha_policy, &k);
}

/*
 * The verdict for a new connection. `local`/`remote` are identities; auth entries need a
 * valid entry in hypha_auth for the pair.
 */
__hy_inline struct policy_verdict policy_decide(__u16 ep, __u8 egress, __u32 local, __u32 remote, __u8 proto,
						__be16 dport)
{
	struct policy_verdict v = {};
	struct policy_entry *exact = __policy_lookup(ep, egress, remote, proto, dport);
	struct policy_entry *any = __policy_lookup(ep, egress, 0, proto, dport);
	struct policy_entry *e;

	if ((exact && (exact->flags & POLICY_DENY)) || (any && (any->flags & POLICY_DENY))) {
		e = exact && (exact->flags & POLICY_DENY) ? exact : any;
		v.drop = DROP_POLICY_DENY;
		v.cookie = e->cookie;
		return v;
	}
	if (!exact && !any) {
		v.drop = DROP_POLICY_DENIED;
		return v;
	}
	e = exact;
	if (!e || (any && any->prefixlen > e->prefixlen))
		e = any;
	if (!e) {
		v.drop = DROP_POLICY_DENIED;
		return v;
	}
	v.cookie = e->cookie;
	v.flags = e->flags;
	v.proxy_port = e->proxy_port;
	if (e->flags & POLICY_AUTH) {
		struct auth_key ak = {
			.local_identity = local,
			.remote_identity = remote,
			.auth_type = e->auth_type,
		};
		struct auth_info *ai = bpf_map_lookup_elem(&hypha_auth, &ak);

		if (!ai || ai->expiration_ns < bpf_ktime_get_ns())
			v.drop = DROP_AUTH_REQUIRED;
	}
	return v;
}

#endif
