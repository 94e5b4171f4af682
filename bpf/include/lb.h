/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: Kubernetes Services, IPv4. The agent writes one master entry per frontend
 * (address, port, protocol; slot 0) with the backend count, rev-NAT index, flags and
 * algorithm, and one entry per backend slot (1..count active, then qcount terminating or
 * quarantined ones, which are kept for listing and never chosen). lb4_lookup_service finds
 * the master; lb4_select_backend picks an active backend, for sockets (sock.c) and for
 * packets on the node's devices (nodeport.h) alike: ClientIP affinity first (keyed by
 * the caller: a netns cookie or an address), then maglev (a per-service lookup table of
 * backend ids, hashed by the client's tuple) or random over the slots. The layouts follow
 * Cilium's lb4_* maps, except that rev-NAT indexes are 32 bits wide (Cilium's 16 cap a
 * node at 65535 frontends) and the service value keeps the affinity timeout and the
 * algorithm in fields of their own.
 *
 * Write order (agent): active backends, then slots 1..count, the maglev table and the
 * master, then the other slots and the backends gone inactive, then deletions; so a
 * program never follows a slot or id to an entry that is not there yet, and one that meets
 * a backend mid-change falls back to a random slot.
 */
#ifndef __HYPHA_LB_H
#define __HYPHA_LB_H

#include "common.h"
#include "drop.h"


/* Lookup scopes (Cilium's LB_LOOKUP_SCOPE_*): with two scopes, EXT holds the backends of
 * externalTrafficPolicy and INT those of internalTrafficPolicy. */
#define LB_LOOKUP_SCOPE_EXT 0
#define LB_LOOKUP_SCOPE_INT 1

/* lb4_service.flags: Cilium's SVC_FLAG_* bits. */
#define SVC_F_EXTERNAL_IP (1 << 0)
#define SVC_F_NODEPORT (1 << 1)
#define SVC_F_EXT_LOCAL_SCOPE (1 << 2)
#define SVC_F_AFFINITY (1 << 4)
#define SVC_F_LOADBALANCER (1 << 5)
#define SVC_F_ROUTABLE (1 << 6)

/* lb4_service.flags2: Cilium's SVC_FLAG_* bits of its second flags byte. */
#define SVC_F2_INT_LOCAL_SCOPE (1 << 4)
#define SVC_F2_TWO_SCOPES (1 << 5)

/* lb4_service.algorithm */
#define LB_ALG_RANDOM 1
#define LB_ALG_MAGLEV 2

/* lb4_backend.state (Cilium's BE_STATE_*): only active backends get new connections. */
#define BE_STATE_ACTIVE 0
#define BE_STATE_TERMINATING 1
#define BE_STATE_QUARANTINED 2

struct lb4_key {
	__be32 address;
	__be16 dport;
	__u16 backend_slot; /* 0: the master entry */
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb4_service {
	__u32 backend_id;	/* slots: the backend; 0 in the master */
	__u32 affinity_timeout; /* master: ClientIP affinity, seconds */
	__u16 count;		/* master: active backends, slots 1..count */
	__u16 qcount;		/* master: inactive backends, slots count+1..count+qcount */
	__u32 rev_nat_index;
	__u8 flags;
	__u8 flags2;
	__u8 algorithm;
	__u8 pad;
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 state;
};

struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16 pad;
};

struct lb4_maglev_key {
	__u32 rev_nat_index;
	__u8 scope;
	__u8 pad[3];
};

struct lb4_affinity_key {
	__u64 client_cookie; /* the client's netns cookie (sockets have no source yet at connect) */
	__u32 rev_nat_index;
	__u8 netns_cookie;   /* 1: client_cookie is a netns cookie, 0: an address (tc, later) */
	__u8 pad[3];
};

struct lb_affinity_val {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

/* Which backends a service has, for affinity: a remembered backend must still belong to it. */
struct lb_affinity_match {
	__u32 backend_id;
	__u32 rev_nat_index;
};

struct lb4_revnat_key {
	__u64 cookie; /* socket cookie */
	__be32 address;
	__be16 port;
	__u16 pad;
};

struct lb4_revnat_entry {
	__be32 address;
	__be16 port;
	__u16 pad;
	__u32 rev_nat_index;
};

/* Large maps are sized by the agent at load time; hashes are allocated as they fill. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb4_reverse_nat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_lb4_reverse_nat SEC(".maps");

/*
 * Maglev lookup tables, one inner array of backend ids per service (and scope). The inner
 * template is BPF_F_INNER_MAP, so the agent's tables may have any size: it makes them
 * lb_maglev_table_size long and swaps a whole new table in on every change.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 65536);
	__type(key, struct lb4_maglev_key);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, __u32);
		__uint(map_flags, BPF_F_INNER_MAP);
	});
} hypha_lb4_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb_affinity_match);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_lb_affinity_match SEC(".maps");

/* Socket -> service, for replies (recvmsg) and getpeername of translated sockets. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct lb4_revnat_key);
	__type(value, struct lb4_revnat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_lb4_sock_revnat SEC(".maps");

/* Set at load time: the length of every maglev table (a prime; Cilium's default is 16381). */
const volatile __u32 lb_maglev_table_size = 251;
/* Seed of the maglev hash. */
const volatile __u32 lb_hash_seed = 0x48797068;

/* Bob Jenkins' lookup3 final mix, as the kernel's jhash_3words. */
#define __lb_rol32(w, s) (((w) << (s)) | ((w) >> (32 - (s))))

__hy_inline __u32 lb_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += 0xdeadbeef + (3 << 2) + initval;
	b += 0xdeadbeef + (3 << 2) + initval;
	c += 0xdeadbeef + (3 << 2) + initval;
	c ^= b; c -= __lb_rol32(b, 14);
	a ^= c; a -= __lb_rol32(c, 11);
	b ^= a; b -= __lb_rol32(a, 25);
	c ^= b; c -= __lb_rol32(b, 16);
	a ^= c; a -= __lb_rol32(c, 4);
	b ^= a; b -= __lb_rol32(a, 14);
	c ^= b; c -= __lb_rol32(b, 24);
	return c;
}

/* The client as a connecting socket shows it: a bound source (or zeros) in its netns. */
struct lb4_client {
	__be32 saddr;
	__be16 sport;
	__u8 proto;
	__u64 netns_cookie;
};

/*
 * The master entry of the frontend in `key` (slot 0, scope EXT), or NULL. A service whose
 * traffic policies differ keeps a second, internal scope: traffic from sockets on this
 * node is internal, so that one applies.
 */
__hy_inline struct lb4_service *lb4_lookup_service(struct lb4_key *key)
{
	struct lb4_service *svc;

	key->backend_slot = 0;
	key->scope = LB_LOOKUP_SCOPE_EXT;
	svc = bpf_map_lookup_elem(&hypha_lb4_services, key);
	if (svc && (svc->flags2 & SVC_F2_TWO_SCOPES)) {
		key->scope = LB_LOOKUP_SCOPE_INT;
		svc = bpf_map_lookup_elem(&hypha_lb4_services, key);
	}
	return svc;
}

__hy_inline struct lb4_backend *lb4_lookup_backend(__u32 backend_id)
{
	return bpf_map_lookup_elem(&hypha_lb4_backends, &backend_id);
}

__hy_inline __u32 __lb4_select_random(struct lb4_key *key, const struct lb4_service *svc)
{
	struct lb4_service *slot;

	key->backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&hypha_lb4_services, key);
	return slot ? slot->backend_id : 0;
}

/* The same client tuple (and netns) to the same frontend always lands on the same entry. */
__hy_inline __u32 __lb4_select_maglev(struct lb4_key *key, const struct lb4_service *svc,
				      const struct lb4_client *c)
{
	struct lb4_maglev_key mk = { .rev_nat_index = svc->rev_nat_index, .scope = key->scope };
	__u32 h, index, *id;
	void *table;

	table = bpf_map_lookup_elem(&hypha_lb4_maglev, &mk);
	if (!table || !lb_maglev_table_size)
		return 0;
	h = lb_jhash_3words(c->saddr, key->address,
			    ((__u32)bpf_ntohs(c->sport) << 16 | bpf_ntohs(key->dport)) ^ c->proto,
			    lb_hash_seed);
	h = lb_jhash_3words((__u32)c->netns_cookie, (__u32)(c->netns_cookie >> 32), h, lb_hash_seed);
	index = h % lb_maglev_table_size;
	id = bpf_map_lookup_elem(table, &index);
	return id ? *id : 0;
}

/*
 * A remembered backend for this client, if the service has ClientIP affinity, the entry is
 * younger than the timeout, and the backend is still an active member of the service.
 */
__hy_inline struct lb4_backend *__lb4_affinity_backend(const struct lb4_service *svc,
						       const struct lb4_affinity_key *ak, __u64 now,
						       __u32 *backend_id)
{
	struct lb_affinity_match match = { .rev_nat_index = svc->rev_nat_index };
	struct lb_affinity_val *val;
	struct lb4_backend *be;

	val = bpf_map_lookup_elem(&hypha_lb4_affinity, ak);
	if (!val)
		return NULL;
	/* The coarse clock may trail a last_used written by a finer one (the agent's): fresh. */
	if (now > val->last_used_ns && now - val->last_used_ns > (__u64)svc->affinity_timeout * 1000000000ULL)
		return NULL;
	match.backend_id = val->backend_id;
	if (!bpf_map_lookup_elem(&hypha_lb_affinity_match, &match))
		return NULL;
	be = lb4_lookup_backend(val->backend_id);
	if (!be || be->state != BE_STATE_ACTIVE)
		return NULL;
	*backend_id = val->backend_id;
	return be;
}

/*
 * Who a ClientIP affinity entry remembers: a socket's netns cookie (at connect() the socket
 * has no source address yet), or a packet's source address on a device (no socket there).
 */
__hy_inline void lb4_affinity_by_netns(struct lb4_affinity_key *ak, __u64 netns_cookie)
{
	__builtin_memset(ak, 0, sizeof(*ak));
	ak->client_cookie = netns_cookie;
	ak->netns_cookie = 1;
}

__hy_inline void lb4_affinity_by_addr(struct lb4_affinity_key *ak, __be32 saddr)
{
	__builtin_memset(ak, 0, sizeof(*ak));
	ak->client_cookie = saddr;
}

/*
 * Picks an active backend of `svc` (svc->count > 0) for client `c`, whose affinity entries
 * are keyed by `ak` (client filled in; the service is set here). The chosen id comes back
 * in *backend_id. NULL only when the slot or backend entry is missing (an agent
 * interrupted mid-update).
 */
__hy_inline struct lb4_backend *lb4_select_backend(struct lb4_key *key, const struct lb4_service *svc,
						   const struct lb4_client *c, struct lb4_affinity_key *ak,
						   __u32 *backend_id)
{
	struct lb4_backend *be = NULL;
	__u32 id = 0;
	__u64 now = 0;

	ak->rev_nat_index = svc->rev_nat_index;
	if (svc->flags & SVC_F_AFFINITY) {
		now = bpf_ktime_get_coarse_ns();
		be = __lb4_affinity_backend(svc, ak, now, &id);
		if (be)
			goto remember;
	}
	if (svc->algorithm == LB_ALG_MAGLEV) {
		id = __lb4_select_maglev(key, svc, c);
		be = id ? lb4_lookup_backend(id) : NULL;
	}
	/*
	 * Random, or maglev without a usable entry (no table yet, a backend on its way out):
	 * slots 1..count hold the active backends once an update is through; one caught
	 * mid-update may just have become terminating, and still serves rather than fail.
	 */
	if (!be || be->state != BE_STATE_ACTIVE) {
		id = __lb4_select_random(key, svc);
		be = id ? lb4_lookup_backend(id) : NULL;
	}
	if (!be)
		return NULL;
remember:
	if (svc->flags & SVC_F_AFFINITY) {
		struct lb_affinity_val val = { .last_used_ns = now, .backend_id = id };

		bpf_map_update_elem(&hypha_lb4_affinity, ak, &val, BPF_ANY);
	}
	*backend_id = id;
	return be;
}

/*
 * Remembers what a socket was translated to, so replies and getpeername show the service.
 * Skips the write when the entry is already there (every sendmsg of unconnected UDP comes here).
 */
__hy_inline int lb4_sock_revnat_update(__u64 cookie, const struct lb4_backend *be,
				       const struct lb4_key *frontend, __u32 rev_nat_index)
{
	struct lb4_revnat_key k = { .cookie = cookie, .address = be->address, .port = be->port };
	struct lb4_revnat_entry v = {
		.address = frontend->address,
		.port = frontend->dport,
		.rev_nat_index = rev_nat_index,
	};
	struct lb4_revnat_entry *cur = bpf_map_lookup_elem(&hypha_lb4_sock_revnat, &k);

	if (cur && cur->address == v.address && cur->port == v.port && cur->rev_nat_index == v.rev_nat_index)
		return 0;
	return bpf_map_update_elem(&hypha_lb4_sock_revnat, &k, &v, BPF_ANY);
}

/*
 * The service a socket's peer (address, port) stands for, or NULL. An entry whose service
 * is gone or was replaced (another rev-NAT index) is removed and not used.
 */
__hy_inline struct lb4_revnat_entry *lb4_sock_revnat_lookup(__u64 cookie, __be32 address, __be16 port,
							     __u8 proto)
{
	struct lb4_revnat_key k = { .cookie = cookie, .address = address, .port = port };
	struct lb4_revnat_entry *v = bpf_map_lookup_elem(&hypha_lb4_sock_revnat, &k);
	struct lb4_service *svc;
	struct lb4_key sk = {};

	if (!v)
		return NULL;
	sk.address = v->address;
	sk.dport = v->port;
	sk.proto = proto;
	svc = lb4_lookup_service(&sk);
	if (!svc || svc->rev_nat_index != v->rev_nat_index) {
		bpf_map_delete_elem(&hypha_lb4_sock_revnat, &k);
		return NULL;
	}
	return v;
}

#endif
