// SPDX-License-Identifier: Apache-2.0
/*
 * What the native HTTP proxy enforces: the redirect entries of the node's endpoints as the
 * agent pushes them (the EndpointsMessage JSON of src/proxy/http/rules.ts, one message per
 * line of the IPC channel), and the HTTP rules of each entry, compiled once (PCRE2, JIT).
 * The same semantics as rules.ts (RedirectTable) and src/policy/http.ts (CompiledRuleSet):
 *   - an entry is chosen the way the datapath chose it: direction, the peer's identity or
 *     0 (any), TCP or any protocol, the longest protocol/port prefix, the exact identity
 *     on a tie;
 *   - method, path and host are regular expressions matched against the whole value
 *     (^(?:...)$, JavaScript-like: $ only at the very end), host case-insensitively;
 *     `headers` entries "Name" (present) or "Name: value" (a field with exactly that
 *     value); `headerMatches` {name, value?, mismatch?}: a mismatch fails the rule unless
 *     mismatch is LOG (noted), ADD (add name: value), DELETE (delete name) or REPLACE
 *     (delete name, then add name: value); a request is allowed when any rule of the
 *     entry matches (the first match's edits apply).
 * Everything a lookup returns stays valid until the next rt_apply.
 */
#ifndef HYPHA_RULES_H
#define HYPHA_RULES_H

#include <stddef.h>
#include <stdint.h>

struct rt_table;
struct rt_endpoint;
struct rt_entry;

enum rt_direction { RT_INGRESS = 0, RT_EGRESS = 1 };

struct rt_header {
	const char *name; /* as received; compared case-insensitively */
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct rt_request {
	const char *method;
	size_t method_len;
	const char *path; /* without the query string */
	size_t path_len;
	const char *host; /* Host field (or the authority of an absolute-form target) */
	size_t host_len;
	const struct rt_header *headers;
	size_t nheaders;
};

enum rt_edit_kind { RT_EDIT_ADD = 0, RT_EDIT_DELETE = 1, RT_EDIT_REPLACE = 2 };

struct rt_edit {
	enum rt_edit_kind kind;
	const char *name; /* NUL-terminated, owned by the table */
	const char *value; /* NULL for DELETE */
};

struct rt_table *rt_new(void);
void rt_free(struct rt_table *t);

/*
 * Applies one EndpointsMessage: {"type":"endpoints","full":bool,"upsert":[endpoint...],
 * "remove":[id...]}, endpoint = {"id","ip","identity","entries":[{"direction":
 * "ingress"|"egress","identity","protocol","port","portPrefixLen","rules":[{"method"?,
 * "path"?,"host"?,"headers"?:[string],"headerMatches"?:[{"name","value"?,"mismatch"?}]}],
 * "policy"?:{"kind","namespace","name"}}]}. `full` replaces every endpoint. Returns 0, or
 * -1 with a message naming the endpoint, entry and field in err (e.g. "endpoint 12
 * entries[0].rules[1].path: missing )") and the table unchanged.
 */
int rt_apply(struct rt_table *t, const char *json, size_t len, char *err, size_t errlen);

/* Whether a full message has been applied. */
int rt_synced(const struct rt_table *t);
size_t rt_size(const struct rt_table *t);

/* The endpoint with this IPv4 address (network byte order), or by id; NULL if none. */
const struct rt_endpoint *rt_endpoint_at(const struct rt_table *t, uint32_t ip_be);
const struct rt_endpoint *rt_endpoint_by_id(const struct rt_table *t, uint32_t id);
uint32_t rt_endpoint_id(const struct rt_endpoint *ep);
uint32_t rt_endpoint_identity(const struct rt_endpoint *ep);

/* The entry a connection to/from `ep` falls under (see above), or NULL: no redirect any more. */
const struct rt_entry *rt_match(const struct rt_endpoint *ep, enum rt_direction dir, uint32_t peer, uint16_t port);

/* "Kind/namespace/name" of the entry's policy, or "" (for records). */
const char *rt_entry_policy(const struct rt_entry *e);

/*
 * Judges a request by the entry's rules: 1 allowed (its edits in edits[0..*nedits), at
 * most max_edits), 0 denied.
 */
int rt_judge(const struct rt_entry *e, const struct rt_request *req, struct rt_edit *edits, size_t max_edits,
	     size_t *nedits);

#endif
