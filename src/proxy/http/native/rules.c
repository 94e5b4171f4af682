// SPDX-License-Identifier: Apache-2.0
/*
 * The redirect table and HTTP rule matcher of rules.h.
 *
 * rt_apply builds everything a message brings (endpoints, compiled rule sets) beside the
 * table and only then swaps it in, so a message that fails anywhere changes nothing; the
 * agent validated the rules with JavaScript's RegExp, so a failure here is a bug or a
 * syntax difference, and refusing the whole message keeps the proxy on its last good view.
 *
 * Rule sets are shared by every entry whose `rules` JSON is the same text (identities
 * selected by the same policy carry the same rules) and counted, so the last entry to let
 * go frees its regexps.
 *
 * Regexps follow JavaScript where PCRE2 can: $ only at the very end, \u and \x escapes,
 * [] and [^], backreferences to unset groups matching empty, and . not matching CR or LF.
 * Subjects are bytes (no UTF mode): a request may carry any byte, and JavaScript's
 * code-unit view of non-ASCII text cannot be reproduced anyway.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "rules.h"

#include <arpa/inet.h>
#include <json-c/json.h>
#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- data --------------------------------------------------------------- */

enum hm_action { HM_FAIL, HM_LOG, HM_ADD, HM_DELETE, HM_REPLACE };

/* A `headers` item: the field must be present (value NULL) or have exactly this value. */
struct hdr_need {
	char *name; /* lower-case */
	size_t name_len;
	char *value;
	size_t value_len;
};

struct hdr_match {
	char *name; /* lower-case: also the name of the edit */
	size_t name_len;
	char *value; /* NULL: presence is enough */
	size_t value_len;
	enum hm_action action;
};

struct rule {
	/*
	 * A pattern PCRE2 cannot compile (the agent checked it as JavaScript, whose syntax
	 * differs at the edges): the rule matches no request, so what it alone would allow is
	 * denied, and the rest of the update still applies (refusing the update would leave the
	 * previous rules in force).
	 */
	int never;
	pcre2_code *method; /* NULL: any */
	pcre2_code *path;
	pcre2_code *host;
	struct hdr_need *needs;
	size_t nneeds;
	struct hdr_match *matches;
	size_t nmatches;
};

struct ruleset {
	struct ruleset *next; /* in its cache bucket */
	char *key; /* the rules' JSON */
	uint64_t hash;
	size_t refs;
	struct rule *rules;
	size_t nrules;
	pcre2_match_data *md; /* whether, not where: one pair is enough */
	pcre2_match_context *mctx; /* the table's */
};

struct rt_entry {
	enum rt_direction dir;
	uint32_t identity;
	uint32_t protocol;
	uint32_t port;
	uint32_t plen;
	int prefix;
	char *policy; /* NULL: none */
	struct ruleset *rules;
};

struct rt_endpoint {
	uint32_t id;
	uint32_t ip_be;
	uint32_t identity;
	struct rt_entry *entries;
	size_t nentries;
};

/* Open addressing, linear probing, at most half full; a NULL value is an empty slot. */
struct epmap {
	uint32_t *keys;
	struct rt_endpoint **vals;
	size_t cap; /* a power of two, or 0 */
	size_t n;
};

struct rscache {
	struct ruleset **buckets;
	size_t nbuckets; /* a power of two */
	size_t n;
};

struct rt_table {
	struct epmap by_id;
	/* By address, the last endpoint upserted with it (as rules.ts's Map): a subset of by_id. */
	struct epmap by_ip;
	struct rscache cache;
	int synced;
	pcre2_compile_context *cctx;
	pcre2_match_context *mctx;
	pcre2_jit_stack *jit;
};

/* ---- small helpers ------------------------------------------------------ */

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static char *dup_lower(const char *s, size_t len)
{
	char *d = malloc(len + 1);
	if (!d)
		return NULL;
	for (size_t i = 0; i < len; i++)
		d[i] = lower(s[i]);
	d[len] = '\0';
	return d;
}

static char *dup_mem(const char *s, size_t len)
{
	char *d = malloc(len + 1);
	if (!d)
		return NULL;
	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

/* A field name from the request (any case) against a rule's (lower-case). */
static int name_eq(const char *req, size_t req_len, const char *rule, size_t rule_len)
{
	if (req_len != rule_len)
		return 0;
	for (size_t i = 0; i < req_len; i++)
		if (lower(req[i]) != rule[i])
			return 0;
	return 1;
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

/* ---- endpoint maps ------------------------------------------------------ */

static size_t ep_home(uint32_t k, size_t cap)
{
	/* Addresses and ids are sequential: mix before masking. */
	k ^= k >> 16;
	k *= 0x45d9f3bu;
	k ^= k >> 16;
	k *= 0x45d9f3bu;
	k ^= k >> 16;
	return k & (cap - 1);
}

static struct rt_endpoint *epmap_get(const struct epmap *m, uint32_t k)
{
	if (!m->cap)
		return NULL;
	for (size_t i = ep_home(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (!m->vals[i])
			return NULL;
		if (m->keys[i] == k)
			return m->vals[i];
	}
}

/* Needs room (epmap_reserve), so that committing a message cannot fail half-way. */
static void epmap_put(struct epmap *m, uint32_t k, struct rt_endpoint *v)
{
	size_t i = ep_home(k, m->cap);
	while (m->vals[i] && m->keys[i] != k)
		i = (i + 1) & (m->cap - 1);
	if (!m->vals[i])
		m->n++;
	m->keys[i] = k;
	m->vals[i] = v;
}

static int epmap_reserve(struct epmap *m, size_t want)
{
	struct epmap g = { 0 };

	if (want <= m->cap / 2)
		return 0;
	g.cap = 16;
	while (g.cap / 2 < want)
		g.cap *= 2;
	g.keys = calloc(g.cap, sizeof(*g.keys));
	g.vals = calloc(g.cap, sizeof(*g.vals));
	if (!g.keys || !g.vals) {
		free(g.keys);
		free(g.vals);
		return -1;
	}
	for (size_t i = 0; i < m->cap; i++)
		if (m->vals[i])
			epmap_put(&g, m->keys[i], m->vals[i]);
	free(m->keys);
	free(m->vals);
	*m = g;
	return 0;
}

/* Backward-shift deletion: no tombstones, so lookups stay short after many updates. */
static void epmap_del(struct epmap *m, uint32_t k)
{
	size_t mask = m->cap - 1, i, j;

	if (!m->cap)
		return;
	for (i = ep_home(k, m->cap);; i = (i + 1) & mask) {
		if (!m->vals[i])
			return;
		if (m->keys[i] == k)
			break;
	}
	m->vals[i] = NULL;
	m->n--;
	for (j = (i + 1) & mask; m->vals[j]; j = (j + 1) & mask) {
		size_t home = ep_home(m->keys[j], m->cap);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			m->vals[j] = NULL;
			i = j;
		}
	}
}

static void epmap_clear(struct epmap *m)
{
	if (m->cap)
		memset(m->vals, 0, m->cap * sizeof(*m->vals));
	m->n = 0;
}

/* ---- rule sets ---------------------------------------------------------- */

static void rule_free(struct rule *r)
{
	pcre2_code_free(r->method);
	pcre2_code_free(r->path);
	pcre2_code_free(r->host);
	for (size_t i = 0; i < r->nneeds; i++) {
		free(r->needs[i].name);
		free(r->needs[i].value);
	}
	free(r->needs);
	for (size_t i = 0; i < r->nmatches; i++) {
		free(r->matches[i].name);
		free(r->matches[i].value);
	}
	free(r->matches);
}

static void ruleset_free(struct ruleset *rs)
{
	for (size_t i = 0; i < rs->nrules; i++)
		rule_free(&rs->rules[i]);
	free(rs->rules);
	pcre2_match_data_free(rs->md);
	free(rs->key);
	free(rs);
}

static struct ruleset *cache_get(const struct rscache *c, const char *key, uint64_t hash)
{
	if (!c->nbuckets)
		return NULL;
	for (struct ruleset *rs = c->buckets[hash & (c->nbuckets - 1)]; rs; rs = rs->next)
		if (rs->hash == hash && !strcmp(rs->key, key))
			return rs;
	return NULL;
}

static void cache_grow(struct rscache *c)
{
	size_t n = c->nbuckets ? c->nbuckets * 2 : 64;
	struct ruleset **b = calloc(n, sizeof(*b));

	/* Without memory the chains just get longer. */
	if (!b)
		return;
	for (size_t i = 0; i < c->nbuckets; i++) {
		for (struct ruleset *rs = c->buckets[i], *next; rs; rs = next) {
			next = rs->next;
			rs->next = b[rs->hash & (n - 1)];
			b[rs->hash & (n - 1)] = rs;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = n;
}

static int cache_add(struct rscache *c, struct ruleset *rs)
{
	if (c->n >= c->nbuckets)
		cache_grow(c);
	if (!c->nbuckets)
		return -1;
	rs->next = c->buckets[rs->hash & (c->nbuckets - 1)];
	c->buckets[rs->hash & (c->nbuckets - 1)] = rs;
	c->n++;
	return 0;
}

static void cache_release(struct rscache *c, struct ruleset *rs)
{
	struct ruleset **p;

	if (--rs->refs)
		return;
	for (p = &c->buckets[rs->hash & (c->nbuckets - 1)]; *p != rs; p = &(*p)->next)
		;
	*p = rs->next;
	c->n--;
	ruleset_free(rs);
}

/* ---- endpoints ---------------------------------------------------------- */

static void endpoint_free(struct rt_table *t, struct rt_endpoint *ep)
{
	for (size_t i = 0; i < ep->nentries; i++) {
		if (ep->entries[i].rules)
			cache_release(&t->cache, ep->entries[i].rules);
		free(ep->entries[i].policy);
	}
	free(ep->entries);
	free(ep);
}

/* Takes `id` out of both maps and frees it (as RedirectTable's #delete). */
static void endpoint_delete(struct rt_table *t, uint32_t id)
{
	struct rt_endpoint *old = epmap_get(&t->by_id, id);

	if (!old)
		return;
	epmap_del(&t->by_id, id);
	if (epmap_get(&t->by_ip, old->ip_be) == old)
		epmap_del(&t->by_ip, old->ip_be);
	endpoint_free(t, old);
}

/* ---- parsing: errors ---------------------------------------------------- */

/*
 * Where parsing is, for messages: "endpoint 12" (or "upsert[3]" before its id is known)
 * and the field path within it, "entries[0].rules[1].path", pushed and popped on the way.
 */
struct ctx {
	struct rt_table *t;
	char *err;
	size_t errlen;
	char who[48];
	char path[192];
	size_t len;
};

/* Appends to the path; returns its length before, for pop. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static size_t push(struct ctx *c, const char *fmt, ...)
{
	size_t before = c->len;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(c->path + c->len, sizeof(c->path) - c->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->len += (size_t)n < sizeof(c->path) - c->len ? (size_t)n : sizeof(c->path) - 1 - c->len;
	return before;
}

static void pop(struct ctx *c, size_t len)
{
	c->len = len;
	c->path[len] = '\0';
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(struct ctx *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!c->err || !c->errlen)
		return -1;
	if (c->who[0] || c->len)
		snprintf(c->err, c->errlen, "%s%s%s: %s", c->who, c->who[0] && c->len ? " " : "", c->path, msg);
	else
		snprintf(c->err, c->errlen, "%s", msg);
	return -1;
}

/* Reported and lived with: the message names the field as fail() does. */
static void warn(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct ctx *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "hypha-http-proxy: %s%s%s: %s (this rule matches no request)\n", c->who,
		c->who[0] && c->len ? " " : "", c->path, msg);
}

static int no_memory(struct ctx *c)
{
	return fail(c, "out of memory");
}

/* ---- parsing: fields ---------------------------------------------------- */

/* The member `key`, NULL when absent or null (JSON.stringify leaves undefined out). */
static json_object *member(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/* A whole number from 0 to max (JSON from JavaScript may spell 80 as 80.0). */
static int uint_of(struct ctx *c, json_object *v, uint64_t max, uint32_t *out)
{
	uint64_t n;

	if (!v)
		return fail(c, "missing");
	if (json_object_is_type(v, json_type_int)) {
		int64_t s = json_object_get_int64(v);
		/* json-c keeps numbers above INT64_MAX as unsigned and clamps them here: out of range anyway. */
		if (s < 0 || (uint64_t)s > max)
			return fail(c, "%s is out of range 0..%llu", json_object_to_json_string(v),
				    (unsigned long long)max);
		n = (uint64_t)s;
	} else if (json_object_is_type(v, json_type_double)) {
		double d = json_object_get_double(v);
		if (!(d >= 0 && d <= (double)max) || (double)(uint64_t)d != d)
			return fail(c, "%s is not a whole number from 0 to %llu", json_object_to_json_string(v),
				    (unsigned long long)max);
		n = (uint64_t)d;
	} else {
		return fail(c, "not a number");
	}
	*out = (uint32_t)n;
	return 0;
}

static int get_uint(struct ctx *c, json_object *o, const char *key, uint64_t max, uint32_t *out)
{
	size_t at = push(c, "%s%s", c->len ? "." : "", key);
	int r = uint_of(c, member(o, key), max, out);

	pop(c, at);
	return r;
}

/*
 * A member of the given JSON type: 0 with *v NULL when absent and not required; else -1
 * with the member named in the error ("missing", or `wrong` when of another type).
 */
static int get_typed(struct ctx *c, json_object *o, const char *key, bool required, json_type type,
		     const char *wrong, json_object **v)
{
	json_object *m = member(o, key);
	size_t at = push(c, "%s%s", c->len ? "." : "", key);
	int r = 0;

	*v = NULL;
	if (!m) {
		if (required)
			r = fail(c, "missing");
	} else if (!json_object_is_type(m, type)) {
		r = fail(c, "%s", wrong);
	} else {
		*v = m;
	}
	pop(c, at);
	return r;
}

/* A string member: 0 with *s NULL when absent and not required. */
static int get_string(struct ctx *c, json_object *o, const char *key, bool required, const char **s, size_t *len)
{
	json_object *v;

	*s = NULL;
	*len = 0;
	if (get_typed(c, o, key, required, json_type_string, "not a string", &v))
		return -1;
	if (v) {
		*s = json_object_get_string(v);
		*len = (size_t)json_object_get_string_len(v);
	}
	return 0;
}

/* An array member: 0 with *a NULL when absent and not required. */
static int get_array(struct ctx *c, json_object *o, const char *key, bool required, json_object **a)
{
	return get_typed(c, o, key, required, json_type_array, "not an array", a);
}

/* ---- parsing: rules ----------------------------------------------------- */

static void regex_error(struct ctx *c, int code, size_t off, size_t head, size_t len)
{
	PCRE2_UCHAR msg[200];
	/* Offsets are the user's pattern's, not the anchored one's. */
	size_t at = off >= head ? off - head : 0;

	if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
		snprintf((char *)msg, sizeof(msg), "error %d", code);
	warn(c, "%s at offset %zu", (const char *)msg, at > len ? len : at);
}

static int compile_re(struct ctx *c, json_object *r, const char *key, uint32_t flags, pcre2_code **out, int *never)
{
	static const char head[] = "^(?:", tail[] = ")$";
	const size_t hl = sizeof(head) - 1, tl = sizeof(tail) - 1;
	const char *src;
	size_t len, at;
	char *pat;
	int code, ret = 0;
	PCRE2_SIZE off;

	*out = NULL;
	if (get_string(c, r, key, false, &src, &len))
		return -1;
	if (!src || !len)
		return 0;
	at = push(c, ".%s", key);
	pat = malloc(hl + len + tl);
	if (!pat) {
		ret = no_memory(c);
		goto out;
	}
	memcpy(pat, head, hl);
	memcpy(pat + hl, src, len);
	memcpy(pat + hl + len, tail, tl);
	*out = pcre2_compile((PCRE2_SPTR)pat, hl + len + tl,
			     PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX | PCRE2_MATCH_UNSET_BACKREF |
				     PCRE2_ALLOW_EMPTY_CLASS | flags,
			     &code, &off, c->t->cctx);
	free(pat);
	if (!*out) {
		regex_error(c, code, off, hl, len);
		*never = 1;
		goto out;
	}
	/* Without JIT (unsupported CPU, no executable memory) the interpreter is slower, not wrong. */
	(void)pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
out:
	pop(c, at);
	return ret;
}

static void trim(const char **a, const char **b)
{
	while (*a < *b && is_space(**a))
		(*a)++;
	while (*b > *a && is_space((*b)[-1]))
		(*b)--;
}

/* "Name" or "Name: value", as parseHeader: split at the first colon, trimmed. */
static int parse_need(const char *s, size_t len, struct hdr_need *h)
{
	const char *colon = memchr(s, ':', len);
	const char *a = s, *b = colon ? colon : s + len;

	trim(&a, &b);
	h->name_len = (size_t)(b - a);
	h->name = dup_lower(a, h->name_len);
	if (!h->name)
		return -1;
	if (!colon)
		return 0;
	a = colon + 1;
	b = s + len;
	trim(&a, &b);
	h->value_len = (size_t)(b - a);
	h->value = dup_mem(a, h->value_len);
	return h->value ? 0 : -1;
}

static int compile_needs(struct ctx *c, json_object *r, struct rule *out)
{
	json_object *a;
	size_t n, at;

	if (get_array(c, r, "headers", false, &a))
		return -1;
	if (!a)
		return 0;
	n = json_object_array_length(a);
	out->needs = calloc(n ? n : 1, sizeof(*out->needs));
	if (!out->needs)
		return no_memory(c);
	for (size_t i = 0; i < n; i++) {
		json_object *v = json_object_array_get_idx(a, i);
		int r = 0;

		at = push(c, ".headers[%zu]", i);
		out->nneeds++;
		if (!json_object_is_type(v, json_type_string))
			r = fail(c, "not a string");
		else if (parse_need(json_object_get_string(v), (size_t)json_object_get_string_len(v), &out->needs[i]))
			r = no_memory(c);
		pop(c, at);
		if (r)
			return -1;
	}
	return 0;
}

static int parse_action(struct ctx *c, json_object *m, enum hm_action *out)
{
	static const struct {
		const char *name;
		enum hm_action action;
	} actions[] = { { "LOG", HM_LOG }, { "ADD", HM_ADD }, { "DELETE", HM_DELETE }, { "REPLACE", HM_REPLACE } };
	const char *s;
	size_t len, at;

	*out = HM_FAIL;
	if (get_string(c, m, "mismatch", false, &s, &len))
		return -1;
	if (!s)
		return 0;
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		if (!strcmp(s, actions[i].name)) {
			*out = actions[i].action;
			return 0;
		}
	}
	/* The agent only sends these four; an unknown action must not quietly let requests through. */
	at = push(c, ".mismatch");
	fail(c, "\"%s\" is not LOG, ADD, DELETE or REPLACE", s);
	pop(c, at);
	return -1;
}

static int compile_match(struct ctx *c, json_object *m, struct hdr_match *out)
{
	const char *s;
	size_t len;

	if (!json_object_is_type(m, json_type_object))
		return fail(c, "not an object");
	if (get_string(c, m, "name", true, &s, &len))
		return -1;
	out->name_len = len;
	out->name = dup_lower(s, len);
	if (!out->name)
		return no_memory(c);
	if (get_string(c, m, "value", false, &s, &len))
		return -1;
	if (s) {
		out->value_len = len;
		out->value = dup_mem(s, len);
		if (!out->value)
			return no_memory(c);
	}
	return parse_action(c, m, &out->action);
}

static int compile_matches(struct ctx *c, json_object *r, struct rule *out)
{
	json_object *a;
	size_t n;

	if (get_array(c, r, "headerMatches", false, &a))
		return -1;
	if (!a)
		return 0;
	n = json_object_array_length(a);
	out->matches = calloc(n ? n : 1, sizeof(*out->matches));
	if (!out->matches)
		return no_memory(c);
	for (size_t i = 0; i < n; i++) {
		size_t at = push(c, ".headerMatches[%zu]", i);
		int r;

		out->nmatches++;
		r = compile_match(c, json_object_array_get_idx(a, i), &out->matches[i]);
		pop(c, at);
		if (r)
			return -1;
	}
	return 0;
}

/* On failure the caller frees what was filled in. */
static int compile_rule(struct ctx *c, json_object *r, struct rule *out)
{
	if (!json_object_is_type(r, json_type_object))
		return fail(c, "not an object");
	if (compile_re(c, r, "method", 0, &out->method, &out->never) ||
	    compile_re(c, r, "path", 0, &out->path, &out->never) ||
	    compile_re(c, r, "host", PCRE2_CASELESS, &out->host, &out->never))
		return -1;
	if (compile_needs(c, r, out))
		return -1;
	return compile_matches(c, r, out);
}

static struct ruleset *compile_ruleset(struct ctx *c, json_object *rules, const char *key, uint64_t hash)
{
	size_t n = json_object_array_length(rules);
	struct ruleset *rs = calloc(1, sizeof(*rs));

	if (!rs || !(rs->key = strdup(key)) || !(rs->rules = calloc(n ? n : 1, sizeof(*rs->rules))) ||
	    !(rs->md = pcre2_match_data_create(1, NULL))) {
		no_memory(c);
		goto bad;
	}
	rs->hash = hash;
	rs->mctx = c->t->mctx;
	for (size_t i = 0; i < n; i++) {
		size_t at = push(c, ".rules[%zu]", i);
		int r;

		rs->nrules++;
		r = compile_rule(c, json_object_array_get_idx(rules, i), &rs->rules[i]);
		pop(c, at);
		if (r)
			goto bad;
	}
	return rs;
bad:
	if (rs)
		ruleset_free(rs);
	return NULL;
}

/* The entry's rule set, shared with every entry of the same rules (one more reference). */
static int entry_rules(struct ctx *c, json_object *e, struct rt_entry *out)
{
	json_object *rules;
	const char *key;
	uint64_t hash;
	struct ruleset *rs;

	if (get_array(c, e, "rules", true, &rules))
		return -1;
	key = json_object_to_json_string_ext(rules, JSON_C_TO_STRING_PLAIN);
	if (!key)
		return no_memory(c);
	hash = fnv1a(key);
	rs = cache_get(&c->t->cache, key, hash);
	if (!rs) {
		rs = compile_ruleset(c, rules, key, hash);
		if (!rs)
			return -1;
		if (cache_add(&c->t->cache, rs)) {
			ruleset_free(rs);
			return no_memory(c);
		}
	}
	rs->refs++;
	out->rules = rs;
	return 0;
}

/* ---- parsing: entries and endpoints ------------------------------------- */

static int entry_policy(struct ctx *c, json_object *e, struct rt_entry *out)
{
	json_object *p = member(e, "policy");
	const char *kind, *ns, *name;
	size_t kl, nl, ml, at;
	int r = 0;

	if (!p)
		return 0;
	at = push(c, ".policy");
	if (!json_object_is_type(p, json_type_object))
		r = fail(c, "not an object");
	else if (get_string(c, p, "kind", true, &kind, &kl) || get_string(c, p, "namespace", true, &ns, &nl) ||
		 get_string(c, p, "name", true, &name, &ml))
		r = -1;
	else if (!(out->policy = malloc(kl + nl + ml + 3)))
		r = no_memory(c);
	else
		sprintf(out->policy, "%s/%s/%s", kind, ns, name);
	pop(c, at);
	return r;
}

static int entry_direction(struct ctx *c, json_object *e, struct rt_entry *out)
{
	const char *s;
	size_t len, at;

	if (get_string(c, e, "direction", true, &s, &len))
		return -1;
	if (!strcmp(s, "ingress")) {
		out->dir = RT_INGRESS;
		return 0;
	}
	if (!strcmp(s, "egress")) {
		out->dir = RT_EGRESS;
		return 0;
	}
	at = push(c, ".direction");
	fail(c, "\"%s\" is not ingress or egress", s);
	pop(c, at);
	return -1;
}

/* The datapath's LPM prefix length of an entry (rules.ts prefixOf). */
static int prefix_of(const struct rt_entry *e)
{
	return 64 + (e->protocol == 0 ? 0 : e->plen == 0 ? 8 : 16 + (int)e->plen);
}

static int build_entry(struct ctx *c, json_object *e, struct rt_entry *out)
{
	if (!json_object_is_type(e, json_type_object))
		return fail(c, "not an object");
	if (entry_direction(c, e, out) || get_uint(c, e, "identity", UINT32_MAX, &out->identity) ||
	    get_uint(c, e, "protocol", 255, &out->protocol) || get_uint(c, e, "port", 65535, &out->port) ||
	    get_uint(c, e, "portPrefixLen", 16, &out->plen))
		return -1;
	out->prefix = prefix_of(out);
	if (entry_policy(c, e, out))
		return -1;
	return entry_rules(c, e, out);
}

static int endpoint_head(struct ctx *c, json_object *o, size_t i, struct rt_endpoint *ep)
{
	const char *ip;
	size_t len;
	struct in_addr a;

	snprintf(c->who, sizeof(c->who), "upsert[%zu]", i);
	if (!json_object_is_type(o, json_type_object))
		return fail(c, "not an object");
	if (get_uint(c, o, "id", UINT32_MAX, &ep->id))
		return -1;
	snprintf(c->who, sizeof(c->who), "endpoint %u", ep->id);
	if (get_uint(c, o, "identity", UINT32_MAX, &ep->identity) || get_string(c, o, "ip", true, &ip, &len))
		return -1;
	if (strlen(ip) != len || inet_pton(AF_INET, ip, &a) != 1) {
		size_t at = push(c, "ip");
		fail(c, "\"%s\" is not an IPv4 address", ip);
		pop(c, at);
		return -1;
	}
	ep->ip_be = a.s_addr;
	return 0;
}

static int build_entries(struct ctx *c, json_object *o, struct rt_endpoint *ep)
{
	json_object *entries;
	size_t n;

	if (get_array(c, o, "entries", true, &entries))
		return -1;
	n = json_object_array_length(entries);
	ep->entries = calloc(n ? n : 1, sizeof(*ep->entries));
	if (!ep->entries)
		return no_memory(c);
	for (size_t k = 0; k < n; k++) {
		size_t at = push(c, "entries[%zu]", k);
		int r;

		ep->nentries++;
		r = build_entry(c, json_object_array_get_idx(entries, k), &ep->entries[k]);
		pop(c, at);
		if (r)
			return -1;
	}
	return 0;
}

static struct rt_endpoint *build_endpoint(struct ctx *c, json_object *o, size_t i)
{
	struct rt_endpoint *ep = calloc(1, sizeof(*ep));

	if (!ep) {
		no_memory(c);
		return NULL;
	}
	if (endpoint_head(c, o, i, ep) || build_entries(c, o, ep)) {
		endpoint_free(c->t, ep);
		return NULL;
	}
	return ep;
}

/* ---- the message -------------------------------------------------------- */

static json_object *parse_json(struct ctx *c, const char *json, size_t len)
{
	json_tokener *tok;
	json_object *o;
	size_t end;

	if (len > INT_MAX) {
		fail(c, "too large");
		return NULL;
	}
	tok = json_tokener_new();
	if (!tok) {
		no_memory(c);
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, json, (int)len);
	if (!o) {
		enum json_tokener_error e = json_tokener_get_error(tok);
		fail(c, "invalid JSON at offset %zu: %s", json_tokener_get_parse_end(tok),
		     e == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(e));
		json_tokener_free(tok);
		return NULL;
	}
	for (end = json_tokener_get_parse_end(tok); end < len && is_space(json[end]); end++)
		;
	json_tokener_free(tok);
	if (end < len) {
		json_object_put(o);
		fail(c, "invalid JSON at offset %zu: data after the message", end);
		return NULL;
	}
	return o;
}

struct message {
	bool full;
	json_object *upsert;
	json_object *remove;
};

static int message_head(struct ctx *c, json_object *o, struct message *m)
{
	json_object *v;
	const char *type;
	size_t len;

	if (!json_object_is_type(o, json_type_object))
		return fail(c, "not an object");
	if (get_string(c, o, "type", true, &type, &len))
		return -1;
	if (strcmp(type, "endpoints")) {
		push(c, "type");
		return fail(c, "\"%s\" is not endpoints", type);
	}
	v = member(o, "full");
	if (v && !json_object_is_type(v, json_type_boolean)) {
		push(c, "full");
		return fail(c, "not a boolean");
	}
	m->full = v && json_object_get_boolean(v);
	if (get_array(c, o, "upsert", true, &m->upsert) || get_array(c, o, "remove", true, &m->remove))
		return -1;
	for (size_t i = 0; i < json_object_array_length(m->remove); i++) {
		size_t at = push(c, "remove[%zu]", i);
		uint32_t id;

		if (uint_of(c, json_object_array_get_idx(m->remove, i), UINT32_MAX, &id))
			return -1;
		pop(c, at);
	}
	return 0;
}

/* The point of no return: nothing below allocates (room was reserved) or fails. */
static void commit(struct rt_table *t, const struct message *m, struct rt_endpoint **next, size_t n)
{
	if (m->full) {
		for (size_t i = 0; i < t->by_id.cap; i++)
			if (t->by_id.vals[i])
				endpoint_free(t, t->by_id.vals[i]);
		epmap_clear(&t->by_id);
		epmap_clear(&t->by_ip);
	}
	/* uint_of accepted them: whole numbers within range, integers or not. */
	for (size_t i = 0; i < json_object_array_length(m->remove); i++)
		endpoint_delete(t, (uint32_t)json_object_get_double(json_object_array_get_idx(m->remove, i)));
	for (size_t i = 0; i < n; i++) {
		endpoint_delete(t, next[i]->id);
		epmap_put(&t->by_id, next[i]->id, next[i]);
		epmap_put(&t->by_ip, next[i]->ip_be, next[i]);
	}
	if (m->full)
		t->synced = 1;
}

static int apply_message(struct ctx *c, json_object *o)
{
	struct rt_table *t = c->t;
	struct message m = { 0 };
	struct rt_endpoint **next;
	size_t n, built = 0;

	if (message_head(c, o, &m))
		return -1;
	n = json_object_array_length(m.upsert);
	next = calloc(n ? n : 1, sizeof(*next));
	if (!next)
		return no_memory(c);
	for (; built < n; built++) {
		next[built] = build_endpoint(c, json_object_array_get_idx(m.upsert, built), built);
		if (!next[built])
			goto bad;
	}
	c->who[0] = '\0';
	if (epmap_reserve(&t->by_id, t->by_id.n + n) || epmap_reserve(&t->by_ip, t->by_id.n + n)) {
		no_memory(c);
		goto bad;
	}
	commit(t, &m, next, n);
	free(next);
	return 0;
bad:
	/* Rule sets only this message used go with their last reference. */
	while (built--)
		endpoint_free(t, next[built]);
	free(next);
	return -1;
}

/* ---- API ---------------------------------------------------------------- */

struct rt_table *rt_new(void)
{
	struct rt_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->cctx = pcre2_compile_context_create(NULL);
	t->mctx = pcre2_match_context_create(NULL);
	if (!t->cctx || !t->mctx) {
		rt_free(t);
		return NULL;
	}
	/* JavaScript's . stops at CR as well as LF. */
	pcre2_set_newline(t->cctx, PCRE2_NEWLINE_ANYCRLF);
	/* The default 32 KiB JIT stack fails deep backtracking that JavaScript would finish. */
	t->jit = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
	if (t->jit)
		pcre2_jit_stack_assign(t->mctx, NULL, t->jit);
	return t;
}

void rt_free(struct rt_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->by_id.cap; i++)
		if (t->by_id.vals[i])
			endpoint_free(t, t->by_id.vals[i]);
	free(t->by_id.keys);
	free(t->by_id.vals);
	free(t->by_ip.keys);
	free(t->by_ip.vals);
	free(t->cache.buckets);
	pcre2_jit_stack_free(t->jit);
	pcre2_match_context_free(t->mctx);
	pcre2_compile_context_free(t->cctx);
	free(t);
}

int rt_apply(struct rt_table *t, const char *json, size_t len, char *err, size_t errlen)
{
	struct ctx c = { .t = t, .err = err, .errlen = errlen };
	json_object *o;
	int r;

	if (err && errlen)
		err[0] = '\0';
	o = parse_json(&c, json, len);
	if (!o)
		return -1;
	r = apply_message(&c, o);
	json_object_put(o);
	return r;
}

int rt_synced(const struct rt_table *t)
{
	return t->synced;
}

size_t rt_size(const struct rt_table *t)
{
	return t->by_id.n;
}

const struct rt_endpoint *rt_endpoint_at(const struct rt_table *t, uint32_t ip_be)
{
	return epmap_get(&t->by_ip, ip_be);
}

const struct rt_endpoint *rt_endpoint_by_id(const struct rt_table *t, uint32_t id)
{
	return epmap_get(&t->by_id, id);
}

uint32_t rt_endpoint_id(const struct rt_endpoint *ep)
{
	return ep->id;
}

uint32_t rt_endpoint_identity(const struct rt_endpoint *ep)
{
	return ep->identity;
}

static int covers(const struct rt_entry *e, uint16_t port)
{
	uint32_t shift;

	if (e->protocol != 0 && e->protocol != 6)
		return 0;
	if (e->protocol == 0 || e->plen == 0)
		return 1;
	shift = 16 - e->plen;
	return ((uint32_t)port >> shift) == (e->port >> shift);
}

const struct rt_entry *rt_match(const struct rt_endpoint *ep, enum rt_direction dir, uint32_t peer, uint16_t port)
{
	const struct rt_entry *best = NULL;

	if (!ep)
		return NULL;
	for (size_t i = 0; i < ep->nentries; i++) {
		const struct rt_entry *e = &ep->entries[i];
		if (e->dir != dir || (e->identity != peer && e->identity != 0) || !covers(e, port))
			continue;
		if (!best || e->prefix > best->prefix ||
		    (e->prefix == best->prefix && e->identity == peer && best->identity != peer))
			best = e;
	}
	return best;
}

const char *rt_entry_policy(const struct rt_entry *e)
{
	return e && e->policy ? e->policy : "";
}

/* ---- judging ------------------------------------------------------------ */

static int re_ok(const struct ruleset *rs, const pcre2_code *re, const char *s, size_t len)
{
	if (!re)
		return 1;
	/* Any error (match or JIT stack limits) counts as no match: deny rather than guess. */
	return pcre2_match(re, (PCRE2_SPTR)(s ? s : ""), s ? len : 0, 0, 0, rs->md, rs->mctx) >= 0;
}

/* Whether the request has the field (value NULL) or the field with exactly that value. */
static int has_header(const struct rt_request *req, const char *name, size_t name_len, const char *value,
		      size_t value_len)
{
	for (size_t i = 0; i < req->nheaders; i++) {
		const struct rt_header *h = &req->headers[i];
		if (!name_eq(h->name, h->name_len, name, name_len))
			continue;
		if (!value || (h->value_len == value_len && (!value_len || !memcmp(h->value, value, value_len))))
			return 1;
	}
	return 0;
}

static void add_edit(struct rt_edit *edits, size_t max, size_t *n, enum rt_edit_kind kind, const char *name,
		     const char *value)
{
	if (*n >= max)
		return;
	edits[*n].kind = kind;
	edits[*n].name = name;
	edits[*n].value = value;
	(*n)++;
}

/* matchRule: 1 when the rule matches, its edits in edits[0..*n). */
static int rule_ok(const struct ruleset *rs, const struct rule *r, const struct rt_request *req,
		   struct rt_edit *edits, size_t max, size_t *n)
{
	if (r->never)
		return 0;
	if (!re_ok(rs, r->method, req->method, req->method_len) || !re_ok(rs, r->path, req->path, req->path_len) ||
	    !re_ok(rs, r->host, req->host, req->host_len))
		return 0;
	for (size_t i = 0; i < r->nneeds; i++) {
		const struct hdr_need *h = &r->needs[i];
		if (!has_header(req, h->name, h->name_len, h->value, h->value_len))
			return 0;
	}
	*n = 0;
	for (size_t i = 0; i < r->nmatches; i++) {
		const struct hdr_match *m = &r->matches[i];
		if (has_header(req, m->name, m->name_len, m->value, m->value_len))
			continue;
		switch (m->action) {
		case HM_FAIL:
			return 0;
		case HM_LOG:
			break;
		case HM_ADD:
			if (m->value)
				add_edit(edits, max, n, RT_EDIT_ADD, m->name, m->value);
			break;
		case HM_DELETE:
			add_edit(edits, max, n, RT_EDIT_DELETE, m->name, NULL);
			break;
		case HM_REPLACE:
			if (m->value)
				add_edit(edits, max, n, RT_EDIT_REPLACE, m->name, m->value);
			break;
		}
	}
	return 1;
}

int rt_judge(const struct rt_entry *e, const struct rt_request *req, struct rt_edit *edits, size_t max_edits,
	     size_t *nedits)
{
	size_t n = 0;
	int ok = 0;

	if (e && e->rules) {
		for (size_t i = 0; i < e->rules->nrules && !ok; i++)
			ok = rule_ok(e->rules, &e->rules->rules[i], req, edits, max_edits, &n);
	}
	if (!ok)
		n = 0;
	if (nedits)
		*nedits = n;
	return ok;
}
