// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of the native proxy's redirect table and HTTP rule matcher (rules.c), against
 * the semantics of src/proxy/http/rules.ts and src/policy/http.ts. Run by
 * test/proxy/native-rules.test.ts; prints one line per failed check and a summary.
 */
#include "../../../src/proxy/http/native/rules.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failed;

#define CHECK(expr)                                                              \
	do {                                                                     \
		checks++;                                                        \
		if (!(expr)) {                                                   \
			failed++;                                                \
			printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #expr);   \
		}                                                                \
	} while (0)

/* ---- helpers ------------------------------------------------------------ */

static char err[512];

/* JSON written with ' for " (none of the tests needs a quote inside a string). */
static const char *js(const char *fmt, ...)
{
	static char bufs[4][16384];
	static int next;
	char *b = bufs[next++ % 4];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b, sizeof(bufs[0]), fmt, ap);
	va_end(ap);
	for (char *p = b; *p; p++)
		if (*p == '\'')
			*p = '"';
	return b;
}

static int apply(struct rt_table *t, const char *json)
{
	return rt_apply(t, json, strlen(json), err, sizeof(err));
}

static uint32_t ip(const char *s)
{
	struct in_addr a;

	inet_pton(AF_INET, s, &a);
	return a.s_addr;
}

static int has(const char *s, const char *part)
{
	return strstr(s, part) != NULL;
}

/* An endpoint with one ingress entry (any peer, TCP port 80) carrying `rules`. */
static const char *endpoint(unsigned id, const char *addr, const char *rules)
{
	return js("{'id':%u,'ip':'%s','identity':%u,'entries':[{'direction':'ingress','identity':0,"
		  "'protocol':6,'port':80,'portPrefixLen':16,'rules':%s}]}",
		  id, addr, 1000 + id, rules);
}

static struct rt_table *table;

/* A fresh table holding one endpoint with these rules; returns its entry. */
static const struct rt_entry *with_rules(const char *rules)
{
	rt_free(table);
	table = rt_new();
	if (apply(table, js("{'type':'endpoints','full':true,'upsert':[%s],'remove':[]}",
			    endpoint(1, "10.0.0.1", rules)))) {
		printf("setup: %s\n", err);
		return NULL;
	}
	return rt_match(rt_endpoint_by_id(table, 1), RT_INGRESS, 5, 80);
}

static struct rt_edit edits[8];
static size_t nedits;

/* hdrs: name, value, name, value, ..., NULL. */
static int judge_n(const struct rt_entry *e, size_t max, const char *method, const char *path, const char *host,
		   const char *const *hdrs)
{
	struct rt_header h[16];
	struct rt_request r = { 0 };

	r.method = method;
	r.method_len = strlen(method);
	r.path = path;
	r.path_len = strlen(path);
	r.host = host;
	r.host_len = strlen(host);
	for (; hdrs && hdrs[0] && r.nheaders < 16; hdrs += 2) {
		h[r.nheaders].name = hdrs[0];
		h[r.nheaders].name_len = strlen(hdrs[0]);
		h[r.nheaders].value = hdrs[1];
		h[r.nheaders].value_len = strlen(hdrs[1]);
		r.nheaders++;
	}
	r.headers = h;
	nedits = 99;
	return rt_judge(e, &r, edits, max, &nedits);
}

static int judge(const struct rt_entry *e, const char *method, const char *path, const char *host,
		 const char *const *hdrs)
{
	return judge_n(e, 8, method, path, host, hdrs);
}

#define H(...) ((const char *const[]){ __VA_ARGS__, NULL })

static int edit_is(size_t i, enum rt_edit_kind kind, const char *name, const char *value)
{
	if (i >= nedits || edits[i].kind != kind || strcmp(edits[i].name, name))
		return 0;
	return value ? edits[i].value && !strcmp(edits[i].value, value) : edits[i].value == NULL;
}

/* ---- rules -------------------------------------------------------------- */

static void test_tutorial(void)
{
	const struct rt_entry *e = with_rules("[{'method':'GET','path':'/api/v1/products.*'}]");

	CHECK(e != NULL);
	CHECK(judge(e, "GET", "/api/v1/products", "shop", NULL) == 1);
	CHECK(nedits == 0);
	CHECK(judge(e, "GET", "/api/v1/products/7", "shop", NULL) == 1);
	CHECK(judge(e, "POST", "/api/v1/products", "shop", NULL) == 0);
	CHECK(nedits == 0);
	CHECK(judge(e, "GET", "/admin", "shop", NULL) == 0);
	CHECK(judge(e, "GET", "/api/v1/productsX", "shop", NULL) == 1);
	CHECK(judge(e, "GET", "/xapi/v1/products", "shop", NULL) == 0);
	CHECK(judge(e, "GETX", "/api/v1/products", "shop", NULL) == 0);
	CHECK(judge(e, "get", "/api/v1/products", "shop", NULL) == 0);
}

static void test_anchoring(void)
{
	const struct rt_entry *e = with_rules("[{'path':'/a'}]");

	CHECK(judge(e, "GET", "/a", "", NULL) == 1);
	CHECK(judge(e, "GET", "/a\n", "", NULL) == 0);
	CHECK(judge(e, "GET", "x/a", "", NULL) == 0);
	e = with_rules("[{'path':'/a$'}]");
	CHECK(judge(e, "GET", "/a", "", NULL) == 1);
	CHECK(judge(e, "GET", "/a\n", "", NULL) == 0);
	/* Alternatives stay inside the anchors. */
	e = with_rules("[{'path':'/a|/b'}]");
	CHECK(judge(e, "GET", "/b", "", NULL) == 1);
	CHECK(judge(e, "GET", "/ab", "", NULL) == 0);
	CHECK(judge(e, "GET", "/a/x", "", NULL) == 0);
	/* As in JavaScript, . matches neither LF nor CR. */
	e = with_rules("[{'path':'/a.*'}]");
	CHECK(judge(e, "GET", "/a/b", "", NULL) == 1);
	CHECK(judge(e, "GET", "/a\nb", "", NULL) == 0);
	CHECK(judge(e, "GET", "/a\rb", "", NULL) == 0);
	CHECK(judge(e, "GET", "/a\tb", "", NULL) == 1);
}

static void test_host(void)
{
	const struct rt_entry *e = with_rules("[{'host':'api\\\\.example\\\\.com'}]");

	CHECK(judge(e, "GET", "/", "api.example.com", NULL) == 1);
	CHECK(judge(e, "GET", "/", "API.Example.COM", NULL) == 1);
	CHECK(judge(e, "GET", "/", "api.example.com.evil", NULL) == 0);
	CHECK(judge(e, "GET", "/", "xapi.example.com", NULL) == 0);
	CHECK(judge(e, "GET", "/", "apixexample.com", NULL) == 0);
	CHECK(judge(e, "GET", "/", "", NULL) == 0);
	/* Only the host is case-insensitive. */
	e = with_rules("[{'path':'/Admin','method':'GET'}]");
	CHECK(judge(e, "GET", "/admin", "", NULL) == 0);
	CHECK(judge(e, "GET", "/Admin", "", NULL) == 1);
}

static void test_empty_means_any(void)
{
	const struct rt_entry *e = with_rules("[{'method':'','path':'','host':''}]");

	CHECK(judge(e, "DELETE", "/anything", "whatever", NULL) == 1);
	e = with_rules("[{}]");
	CHECK(judge(e, "PUT", "/", "", NULL) == 1);
	e = with_rules("[{'method':null,'path':'/x'}]");
	CHECK(judge(e, "PUT", "/x", "", NULL) == 1);
	/* No rule: nothing is allowed. */
	e = with_rules("[]");
	CHECK(e != NULL);
	CHECK(judge(e, "GET", "/", "", NULL) == 0);
	/* Nothing to judge by. */
	CHECK(judge(NULL, "GET", "/", "", NULL) == 0);
}

static void test_headers(void)
{
	const struct rt_entry *e = with_rules("[{'headers':['X-Token','  X-Mode :  fast  ']}]");

	CHECK(judge(e, "GET", "/", "", H("x-token", "abc", "X-Mode", "fast")) == 1);
	CHECK(judge(e, "GET", "/", "", H("X-TOKEN", "", "x-mode", "fast")) == 1);
	CHECK(judge(e, "GET", "/", "", H("X-Mode", "fast")) == 0);
	CHECK(judge(e, "GET", "/", "", H("X-Token", "1")) == 0);
	CHECK(judge(e, "GET", "/", "", H("X-Token", "1", "X-Mode", "slow")) == 0);
	/* Values are compared exactly. */
	CHECK(judge(e, "GET", "/", "", H("X-Token", "1", "X-Mode", "Fast")) == 0);
	CHECK(judge(e, "GET", "/", "", H("X-Token", "1", "X-Mode", "fast ")) == 0);
	/* A field sent twice has two values; either may match. */
	CHECK(judge(e, "GET", "/", "", H("X-Mode", "slow", "X-Token", "1", "X-Mode", "fast")) == 1);
	/* A name must match whole. */
	CHECK(judge(e, "GET", "/", "", H("X-Tokens", "1", "X-Mode", "fast")) == 0);
	/* Only the first colon splits: the value may hold more. */
	e = with_rules("[{'headers':['X-At: 10:30']}]");
	CHECK(judge(e, "GET", "/", "", H("X-At", "10:30")) == 1);
	CHECK(judge(e, "GET", "/", "", H("X-At", "10")) == 0);
	/* "Name:" wants an empty value; "Name" any. */
	e = with_rules("[{'headers':['X-Empty:']}]");
	CHECK(judge(e, "GET", "/", "", H("X-Empty", "")) == 1);
	CHECK(judge(e, "GET", "/", "", H("X-Empty", "x")) == 0);
	CHECK(judge(e, "GET", "/", "", NULL) == 0);
}

static void test_header_matches(void)
{
	const struct rt_entry *e;

	/* No action: a mismatch fails the rule. */
	e = with_rules("[{'headerMatches':[{'name':'X-Env','value':'prod'}]}]");
	CHECK(judge(e, "GET", "/", "", H("x-env", "prod")) == 1);
	CHECK(nedits == 0);
	CHECK(judge(e, "GET", "/", "", H("X-Env", "dev")) == 0);
	CHECK(judge(e, "GET", "/", "", NULL) == 0);
	CHECK(judge(e, "GET", "/", "", H("X-Env", "dev", "X-ENV", "prod")) == 1);

	/* Without a value, presence is enough. */
	e = with_rules("[{'headerMatches':[{'name':'X-Env'}]}]");
	CHECK(judge(e, "GET", "/", "", H("X-Env", "")) == 1);
	CHECK(judge(e, "GET", "/", "", NULL) == 0);

	e = with_rules("[{'headerMatches':[{'name':'X-Env','value':'prod','mismatch':'LOG'}]}]");
	CHECK(judge(e, "GET", "/", "", H("X-Env", "dev")) == 1);
	CHECK(nedits == 0);

	e = with_rules("[{'headerMatches':[{'name':'X-Env','value':'prod','mismatch':'ADD'}]}]");
	CHECK(judge(e, "GET", "/", "", H("X-Env", "dev")) == 1);
	CHECK(nedits == 1);
	CHECK(edit_is(0, RT_EDIT_ADD, "x-env", "prod"));
	CHECK(judge(e, "GET", "/", "", H("X-Env", "prod")) == 1);
	CHECK(nedits == 0);

	e = with_rules("[{'headerMatches':[{'name':'X-Env','mismatch':'ADD'}]}]");
	CHECK(judge(e, "GET", "/", "", NULL) == 1);
	CHECK(nedits == 0);

	e = with_rules("[{'headerMatches':[{'name':'X-Env','value':'prod','mismatch':'DELETE'}]}]");
	CHECK(judge(e, "GET", "/", "", H("X-Env", "dev")) == 1);
	CHECK(nedits == 1);
	CHECK(edit_is(0, RT_EDIT_DELETE, "x-env", NULL));
	CHECK(judge(e, "GET", "/", "", H("X-Env", "prod")) == 1);
	CHECK(nedits == 0);
	e = with_rules("[{'headerMatches':[{'name':'X-Env','mismatch':'DELETE'}]}]");
	CHECK(judge(e, "GET", "/", "", NULL) == 1);
	CHECK(edit_is(0, RT_EDIT_DELETE, "x-env", NULL));

	e = with_rules("[{'headerMatches':[{'name':'X-Env','value':'prod','mismatch':'REPLACE'}]}]");
	CHECK(judge(e, "GET", "/", "", H("X-Env", "dev")) == 1);
	CHECK(nedits == 1);
	CHECK(edit_is(0, RT_EDIT_REPLACE, "x-env", "prod"));
	CHECK(judge(e, "GET", "/", "", NULL) == 1);
	CHECK(edit_is(0, RT_EDIT_REPLACE, "x-env", "prod"));
	e = with_rules("[{'headerMatches':[{'name':'X-Env','mismatch':'REPLACE'}]}]");
	CHECK(judge(e, "GET", "/", "", NULL) == 1);
	CHECK(nedits == 0);

	/* Several, in order; a failing one without an action fails the rule after all. */
	e = with_rules("[{'headerMatches':[{'name':'A','value':'1','mismatch':'ADD'},"
		       "{'name':'B','mismatch':'DELETE'},{'name':'C','value':'3','mismatch':'REPLACE'},"
		       "{'name':'D','value':'4'}]}]");
	CHECK(judge(e, "GET", "/", "", H("D", "4")) == 1);
	CHECK(nedits == 3);
	CHECK(edit_is(0, RT_EDIT_ADD, "a", "1"));
	CHECK(edit_is(1, RT_EDIT_DELETE, "b", NULL));
	CHECK(edit_is(2, RT_EDIT_REPLACE, "c", "3"));
	CHECK(judge(e, "GET", "/", "", H("D", "5")) == 0);
	CHECK(nedits == 0);
	/* Room for fewer edits: the first ones. */
	CHECK(judge_n(e, 2, "GET", "/", "", H("D", "4")) == 1);
	CHECK(nedits == 2);
	CHECK(edit_is(1, RT_EDIT_DELETE, "b", NULL));
	CHECK(judge_n(e, 0, "GET", "/", "", H("D", "4")) == 1);
	CHECK(nedits == 0);
}

static void test_several_rules(void)
{
	const struct rt_entry *e = with_rules(
		"[{'path':'/a','headerMatches':[{'name':'X','value':'1','mismatch':'ADD'}]},"
		"{'path':'/a.*','headerMatches':[{'name':'Y','value':'2','mismatch':'ADD'}]},"
		"{'method':'POST'}]");

	CHECK(judge(e, "GET", "/a", "", NULL) == 1);
	CHECK(nedits == 1 && edit_is(0, RT_EDIT_ADD, "x", "1"));
	CHECK(judge(e, "GET", "/ab", "", NULL) == 1);
	CHECK(nedits == 1 && edit_is(0, RT_EDIT_ADD, "y", "2"));
	CHECK(judge(e, "POST", "/zzz", "", NULL) == 1);
	CHECK(nedits == 0);
	CHECK(judge(e, "GET", "/zzz", "", NULL) == 0);

	/* A rule that fails on a later header match leaves no edits behind. */
	e = with_rules("[{'headerMatches':[{'name':'X','value':'1','mismatch':'ADD'},{'name':'Must'}]},"
		       "{'path':'/b'}]");
	CHECK(judge(e, "GET", "/b", "", NULL) == 1);
	CHECK(nedits == 0);
	CHECK(judge(e, "GET", "/c", "", H("Must", "")) == 1);
	CHECK(nedits == 1 && edit_is(0, RT_EDIT_ADD, "x", "1"));
}

static void test_js_syntax(void)
{
	const struct rt_entry *e = with_rules("[{'path':'/items/\\\\d+','host':'[a-z]{2,3}\\\\.io'}]");

	CHECK(judge(e, "GET", "/items/42", "ab.io", NULL) == 1);
	CHECK(judge(e, "GET", "/items/4a", "ab.io", NULL) == 0);
	CHECK(judge(e, "GET", "/items/42", "ABC.io", NULL) == 1);
	CHECK(judge(e, "GET", "/items/42", "abcd.io", NULL) == 0);
	CHECK(judge(e, "GET", "/items/", "ab.io", NULL) == 0);
	/* \u and \x escapes, [^] (anything), a lookahead, a backreference to an unset group. */
	e = with_rules("[{'path':'/\\\\u0041\\\\x42(?!x)[^]*','method':'(?:(X)|G)\\\\1ET'}]");
	CHECK(judge(e, "GET", "/AB\nq", "", NULL) == 1);
	CHECK(judge(e, "GET", "/ABx", "", NULL) == 0);
	CHECK(judge(e, "XXET", "/AB", "", NULL) == 1);
	/* JSON escapes arrive as UTF-8, matched byte for byte. */
	e = with_rules("[{'path':'/caf\\u00e9/\u00fc.'}]");
	CHECK(judge(e, "GET", "/caf\xc3\xa9/\xc3\xbc\xc3", "", NULL) == 1);
	CHECK(judge(e, "GET", "/cafe/\xc3\xbcx", "", NULL) == 0);
	e = with_rules("[{'path':'/(?<v>v[0-9])/\\\\k<v>'}]");
	CHECK(judge(e, "GET", "/v1/v1", "", NULL) == 1);
	CHECK(judge(e, "GET", "/v1/v2", "", NULL) == 0);
}

/* ---- entries ------------------------------------------------------------ */

static const char *entry(const char *dir, unsigned identity, unsigned proto, unsigned port, unsigned plen,
			 const char *path)
{
	return js("{'direction':'%s','identity':%u,'protocol':%u,'port':%u,'portPrefixLen':%u,"
		  "'rules':[{'path':'%s'}],'policy':{'kind':'CiliumNetworkPolicy','namespace':'ns','name':'%s'}}",
		  dir, identity, proto, port, plen, path, path + 1);
}

static void add_entry(char *es, size_t cap, const char *e)
{
	size_t len = strlen(es);

	snprintf(es + len, cap - len, "%s%s", len ? "," : "", e);
}

/* Which entry rt_match picked, by the name of its policy ("" for none). */
static const char *picked(const struct rt_endpoint *ep, enum rt_direction dir, uint32_t peer, uint16_t port)
{
	const struct rt_entry *e = rt_match(ep, dir, peer, port);
	const char *p;

	if (!e)
		return "";
	p = rt_entry_policy(e);
	return strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
}

static void test_entry_selection(void)
{
	struct rt_table *t = rt_new();
	const struct rt_endpoint *ep;
	char es[4096];

	/* entry() returns a rotating buffer: append one at a time. */
	es[0] = '\0';
	add_entry(es, sizeof(es), entry("ingress", 0, 6, 8080, 16, "/any8080"));
	add_entry(es, sizeof(es), entry("ingress", 7, 6, 8080, 16, "/seven8080"));
	add_entry(es, sizeof(es), entry("egress", 0, 6, 8080, 16, "/out8080"));
	add_entry(es, sizeof(es), entry("ingress", 0, 6, 9000, 12, "/range9000"));
	add_entry(es, sizeof(es), entry("ingress", 7, 6, 9000, 8, "/seven9000wide"));
	add_entry(es, sizeof(es), entry("ingress", 0, 0, 0, 0, "/anyproto"));
	add_entry(es, sizeof(es), entry("ingress", 9, 6, 0, 0, "/ninetcp"));
	add_entry(es, sizeof(es), entry("ingress", 0, 17, 5353, 16, "/udp"));
	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[{'id':3,'ip':'10.0.0.3','identity':33,"
			  "'entries':[%s]}],'remove':[]}",
			  es)) == 0);
	ep = rt_endpoint_by_id(t, 3);
	CHECK(ep != NULL);
	/* Direction. */
	CHECK(!strcmp(picked(ep, RT_EGRESS, 5, 8080), "out8080"));
	CHECK(!strcmp(picked(ep, RT_EGRESS, 5, 8081), ""));
	/* The exact identity wins a tie; any other peer gets the wildcard. */
	CHECK(!strcmp(picked(ep, RT_INGRESS, 7, 8080), "seven8080"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 8, 8080), "any8080"));
	/* A longer port prefix beats the exact identity. 9000 = 0x2328: /12 covers 0x2320-0x232f. */
	CHECK(!strcmp(picked(ep, RT_INGRESS, 7, 9000), "range9000"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 7, 0x232f), "range9000"));
	/* Outside the /12 but inside the /8 (0x2300-0x23ff). */
	CHECK(!strcmp(picked(ep, RT_INGRESS, 7, 0x2330), "seven9000wide"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 7, 0x23ff), "seven9000wide"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 8, 0x2330), "anyproto"));
	/* Protocol 0 covers every port, with the shortest prefix; TCP with no port beats it. */
	CHECK(!strcmp(picked(ep, RT_INGRESS, 8, 1), "anyproto"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 9, 1), "ninetcp"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 9, 8080), "any8080"));
	/* UDP entries never cover a proxied (TCP) connection. */
	CHECK(!strcmp(picked(ep, RT_INGRESS, 8, 5353), "anyproto"));
	CHECK(!strcmp(picked(ep, RT_EGRESS, 8, 5353), ""));
	CHECK(rt_match(NULL, RT_INGRESS, 1, 80) == NULL);
	/* The picked entry's rules are the ones judged. */
	CHECK(judge(rt_match(ep, RT_INGRESS, 7, 8080), "GET", "/seven8080", "", NULL) == 1);
	CHECK(judge(rt_match(ep, RT_INGRESS, 7, 8080), "GET", "/any8080", "", NULL) == 0);

	/* On a tie between equals, the first. */
	es[0] = '\0';
	add_entry(es, sizeof(es), entry("ingress", 0, 6, 80, 16, "/first"));
	add_entry(es, sizeof(es), entry("ingress", 0, 6, 80, 16, "/second"));
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[{'id':3,'ip':'10.0.0.3','identity':33,"
			  "'entries':[%s]}],'remove':[]}",
			  es)) == 0);
	ep = rt_endpoint_by_id(t, 3);
	CHECK(!strcmp(picked(ep, RT_INGRESS, 1, 80), "first"));
	/* Exact identity after a wildcard of the same prefix still wins. */
	es[0] = '\0';
	add_entry(es, sizeof(es), entry("ingress", 0, 6, 80, 16, "/wild"));
	add_entry(es, sizeof(es), entry("ingress", 4, 6, 80, 16, "/four"));
	add_entry(es, sizeof(es), entry("ingress", 4, 6, 80, 16, "/fourbis"));
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[{'id':3,'ip':'10.0.0.3','identity':33,"
			  "'entries':[%s]}],'remove':[]}",
			  es)) == 0);
	ep = rt_endpoint_by_id(t, 3);
	CHECK(!strcmp(picked(ep, RT_INGRESS, 4, 80), "four"));
	CHECK(!strcmp(picked(ep, RT_INGRESS, 0, 80), "wild"));
	rt_free(t);
}

static void test_policy_name(void)
{
	struct rt_table *t = rt_new();
	const struct rt_endpoint *ep;

	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[{'id':1,'ip':'10.0.0.1','identity':2,"
			  "'entries':[{'direction':'egress','identity':0,'protocol':6,'port':80,'portPrefixLen':16,"
			  "'rules':[],'policy':{'kind':'CiliumNetworkPolicy','namespace':'shop','name':'api-l7'}},"
			  "{'direction':'egress','identity':0,'protocol':6,'port':81,'portPrefixLen':16,'rules':[]},"
			  "{'direction':'egress','identity':0,'protocol':6,'port':82,'portPrefixLen':16,'rules':[],"
			  "'policy':{'kind':'CiliumClusterwideNetworkPolicy','namespace':'','name':'all'}},"
			  "{'direction':'egress','identity':0,'protocol':6,'port':83,'portPrefixLen':16,'rules':[],"
			  "'policy':null}]}],'remove':[]}")) == 0);
	ep = rt_endpoint_by_id(t, 1);
	CHECK(!strcmp(rt_entry_policy(rt_match(ep, RT_EGRESS, 1, 80)), "CiliumNetworkPolicy/shop/api-l7"));
	CHECK(!strcmp(rt_entry_policy(rt_match(ep, RT_EGRESS, 1, 81)), ""));
	CHECK(!strcmp(rt_entry_policy(rt_match(ep, RT_EGRESS, 1, 82)), "CiliumClusterwideNetworkPolicy//all"));
	CHECK(!strcmp(rt_entry_policy(rt_match(ep, RT_EGRESS, 1, 83)), ""));
	CHECK(!strcmp(rt_entry_policy(NULL), ""));
	rt_free(t);
}

/* ---- the table ---------------------------------------------------------- */

static const char *rules_a = "[{'path':'/a','headerMatches':[{'name':'X','value':'1','mismatch':'ADD'}]}]";
static const char *rules_b = "[{'path':'/b'}]";

static void test_apply(void)
{
	struct rt_table *t = rt_new();
	const struct rt_endpoint *ep;
	const char *name1;

	CHECK(rt_synced(t) == 0);
	CHECK(rt_size(t) == 0);
	CHECK(rt_endpoint_at(t, ip("10.0.0.1")) == NULL);
	/* An update before the first full set is applied, but the table is not synced yet. */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[%s],'remove':[]}",
			  endpoint(9, "10.0.0.9", rules_a))) == 0);
	CHECK(rt_synced(t) == 0);
	CHECK(rt_size(t) == 1);
	/* A full set replaces everything. */
	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[%s,%s],'remove':[]}",
			  endpoint(1, "10.0.0.1", rules_a), endpoint(2, "10.0.0.2", rules_a))) == 0);
	CHECK(rt_synced(t) == 1);
	CHECK(rt_size(t) == 2);
	CHECK(rt_endpoint_by_id(t, 9) == NULL);
	CHECK(rt_endpoint_at(t, ip("10.0.0.9")) == NULL);
	ep = rt_endpoint_at(t, ip("10.0.0.2"));
	CHECK(ep != NULL && rt_endpoint_id(ep) == 2 && rt_endpoint_identity(ep) == 1002);
	CHECK(rt_endpoint_by_id(t, 2) == ep);
	CHECK(rt_endpoint_at(t, ip("10.0.0.3")) == NULL);
	CHECK(rt_endpoint_by_id(t, 3) == NULL);

	/* Equal rules are compiled once: both entries hand out the same strings. */
	CHECK(judge(rt_match(rt_endpoint_by_id(t, 1), RT_INGRESS, 5, 80), "GET", "/a", "", NULL) == 1);
	name1 = nedits == 1 ? edits[0].name : NULL;
	CHECK(judge(rt_match(ep, RT_INGRESS, 5, 80), "GET", "/a", "", NULL) == 1);
	CHECK(name1 != NULL && nedits == 1 && edits[0].name == name1);

	/* Incremental: remove 1, change 2, add 3. */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[%s,%s],'remove':[1]}",
			  endpoint(2, "10.0.0.2", rules_b), endpoint(3, "10.0.0.3", rules_a))) == 0);
	CHECK(rt_synced(t) == 1);
	CHECK(rt_size(t) == 2);
	CHECK(rt_endpoint_by_id(t, 1) == NULL);
	CHECK(rt_endpoint_at(t, ip("10.0.0.1")) == NULL);
	ep = rt_endpoint_at(t, ip("10.0.0.2"));
	CHECK(judge(rt_match(ep, RT_INGRESS, 5, 80), "GET", "/b", "", NULL) == 1);
	CHECK(judge(rt_match(ep, RT_INGRESS, 5, 80), "GET", "/a", "", NULL) == 0);
	CHECK(judge(rt_match(rt_endpoint_at(t, ip("10.0.0.3")), RT_INGRESS, 5, 80), "GET", "/a", "", NULL) == 1);
	CHECK(edit_is(0, RT_EDIT_ADD, "x", "1"));

	/* An id both removed and upserted is upserted (removals come first); the last of an id wins. */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[%s,%s],'remove':[3, 77]}",
			  endpoint(3, "10.0.0.30", rules_a), endpoint(3, "10.0.0.31", rules_b))) == 0);
	CHECK(rt_size(t) == 2);
	CHECK(rt_endpoint_at(t, ip("10.0.0.3")) == NULL);
	CHECK(rt_endpoint_at(t, ip("10.0.0.30")) == NULL);
	CHECK(rt_endpoint_at(t, ip("10.0.0.31")) == rt_endpoint_by_id(t, 3));

	/* An address moves to the endpoint that last claimed it (as rules.ts's Map). */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[%s],'remove':[]}",
			  endpoint(4, "10.0.0.2", rules_a))) == 0);
	CHECK(rt_endpoint_id(rt_endpoint_at(t, ip("10.0.0.2"))) == 4);
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[],'remove':[4]}")) == 0);
	CHECK(rt_endpoint_at(t, ip("10.0.0.2")) == NULL);
	CHECK(rt_endpoint_by_id(t, 2) != NULL);

	/* An endpoint without entries is kept; nothing redirects to it. */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[{'id':5,'ip':'10.0.0.5','identity':1,"
			  "'entries':[]}],'remove':[]}")) == 0);
	CHECK(rt_match(rt_endpoint_by_id(t, 5), RT_INGRESS, 1, 80) == NULL);

	/* An empty full set empties the table. */
	CHECK(apply(t, "{\"type\":\"endpoints\",\"full\":true,\"upsert\":[],\"remove\":[]}\n") == 0);
	CHECK(rt_size(t) == 0);
	CHECK(rt_synced(t) == 1);
	CHECK(rt_endpoint_by_id(t, 2) == NULL);
	CHECK(rt_endpoint_at(t, ip("10.0.0.31")) == NULL);
	rt_free(t);
}

static void test_many(void)
{
	enum { N = 5000 };
	struct rt_table *t = rt_new();
	size_t cap = N * 200 + 256, len;
	char *m = malloc(cap);
	int ok = 1;

	len = (size_t)snprintf(m, cap, "{\"type\":\"endpoints\",\"full\":true,\"remove\":[],\"upsert\":[");
	for (unsigned i = 0; i < N; i++)
		len += (size_t)snprintf(m + len, cap - len,
					"%s{\"id\":%u,\"ip\":\"10.%u.%u.%u\",\"identity\":%u,\"entries\":[{\"direction\":"
					"\"egress\",\"identity\":0,\"protocol\":6,\"port\":80,\"portPrefixLen\":16,"
					"\"rules\":[{\"path\":\"/%u\"}]}]}",
					i ? "," : "", i + 1, i >> 16, (i >> 8) & 255, i & 255, i + 100, i % 7);
	len += (size_t)snprintf(m + len, cap - len, "]}");
	CHECK(rt_apply(t, m, len, err, sizeof(err)) == 0);
	CHECK(rt_size(t) == N);
	for (unsigned i = 0; i < N; i++) {
		char a[32];
		const struct rt_endpoint *ep;

		snprintf(a, sizeof(a), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
		ep = rt_endpoint_at(t, ip(a));
		if (!ep || rt_endpoint_id(ep) != i + 1 || rt_endpoint_by_id(t, i + 1) != ep)
			ok = 0;
	}
	CHECK(ok);
	/* Remove every other one: lookups of the rest still find them. */
	len = (size_t)snprintf(m, cap, "{\"type\":\"endpoints\",\"full\":false,\"upsert\":[],\"remove\":[");
	for (unsigned i = 0; i < N; i += 2)
		len += (size_t)snprintf(m + len, cap - len, "%s%u", i ? "," : "", i + 1);
	len += (size_t)snprintf(m + len, cap - len, "]}");
	CHECK(rt_apply(t, m, len, err, sizeof(err)) == 0);
	CHECK(rt_size(t) == N / 2);
	ok = 1;
	for (unsigned i = 0; i < N; i++) {
		char a[32];
		const struct rt_endpoint *ep;

		snprintf(a, sizeof(a), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
		ep = rt_endpoint_at(t, ip(a));
		if (i % 2 == 0 ? ep != NULL || rt_endpoint_by_id(t, i + 1) != NULL
			       : !ep || rt_endpoint_id(ep) != i + 1 || rt_endpoint_by_id(t, i + 1) != ep)
			ok = 0;
	}
	CHECK(ok);
	free(m);
	rt_free(t);
}

/* ---- errors ------------------------------------------------------------- */

/*
 * A pattern PCRE2 cannot compile does not refuse the update (the previous rules would stay
 * in force): that rule matches nothing, the others apply.
 */
static void test_uncompilable(void)
{
	struct rt_table *t = rt_new();

	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[%s],'remove':[]}",
			  endpoint(7, "10.0.0.7", "[{'method':'(','path':'/a'},{'host':'a)'},{'path':'/ok'}]"))) == 0);
	const struct rt_entry *e = rt_match(rt_endpoint_by_id(t, 7), RT_INGRESS, 5, 80);
	CHECK(e != NULL);
	CHECK(judge(e, "GET", "/ok", "", NULL) == 1);
	CHECK(judge(e, "(", "/a", "", NULL) == 0);
	CHECK(judge(e, "GET", "/a", "a)", NULL) == 0);
	rt_free(t);
}

static void test_atomic(void)
{
	struct rt_table *t = rt_new();
	const struct rt_endpoint *ep1, *ep2;
	const struct rt_entry *e1;

	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[%s,%s],'remove':[]}",
			  endpoint(1, "10.0.0.1", rules_a), endpoint(2, "10.0.0.2", rules_b))) == 0);
	ep1 = rt_endpoint_by_id(t, 1);
	ep2 = rt_endpoint_by_id(t, 2);
	e1 = rt_match(ep1, RT_INGRESS, 5, 80);

	/* Endpoint 4's second entry has a bad path; 3 and 5 are fine, 1 is to be removed. */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'upsert':[%s,{'id':4,'ip':'10.0.0.4','identity':4,"
			  "'entries':[{'direction':'ingress','identity':0,'protocol':6,'port':80,'portPrefixLen':16,"
			  "'rules':[{'path':'/new'}]},{'direction':'ingress','identity':0,'protocol':6,'port':81,"
			  "'portPrefixLen':16,'rules':[{'path':'/ok'},{'method':'GET','path':5}]}]},%s],"
			  "'remove':[1]}",
			  endpoint(3, "10.0.0.3", "[{'path':'/three'}]"), endpoint(5, "10.0.0.5", rules_a))) == -1);
	CHECK(!strcmp(err, "endpoint 4 entries[1].rules[1].path: not a string"));
	CHECK(rt_size(t) == 2);
	CHECK(rt_endpoint_by_id(t, 1) == ep1);
	CHECK(rt_endpoint_at(t, ip("10.0.0.1")) == ep1);
	CHECK(rt_endpoint_by_id(t, 2) == ep2);
	CHECK(rt_endpoint_by_id(t, 3) == NULL);
	CHECK(rt_endpoint_by_id(t, 4) == NULL);
	CHECK(rt_endpoint_at(t, ip("10.0.0.5")) == NULL);
	CHECK(rt_match(ep1, RT_INGRESS, 5, 80) == e1);
	CHECK(judge(e1, "GET", "/a", "", NULL) == 1);
	CHECK(edit_is(0, RT_EDIT_ADD, "x", "1"));
	CHECK(judge(rt_match(ep2, RT_INGRESS, 5, 80), "GET", "/b", "", NULL) == 1);

	/* A failed full set neither empties the table nor marks a fresh one synced. */
	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[%s],'remove':[]}",
			  endpoint(6, "10.0.0.6", "[{'host':['a']}]"))) == -1);
	CHECK(has(err, "endpoint 6 entries[0].rules[0].host: not a string"));
	CHECK(rt_size(t) == 2);
	CHECK(rt_endpoint_by_id(t, 1) == ep1);
	rt_free(t);
	t = rt_new();
	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[%s],'remove':[]}",
			  endpoint(6, "10.0.0.6", "[{'headers':'X'}]"))) == -1);
	CHECK(has(err, "endpoint 6 entries[0].rules[0].headers: not an array"));
	CHECK(rt_synced(t) == 0);
	CHECK(rt_size(t) == 0);
	rt_free(t);
}

/* The message must be refused, with an error containing `want`. */
#define REFUSED(json, want)                                                        \
	do {                                                                       \
		const char *j_ = (json);                                           \
		CHECK(rt_apply(t, j_, strlen(j_), err, sizeof(err)) == -1);        \
		CHECK(has(err, want));                                             \
		if (!has(err, want))                                               \
			printf("  got: %s\n", err);                                \
		CHECK(rt_size(t) == 1);                                            \
	} while (0)

static const char *bad_entry(const char *field, const char *value)
{
	char e[1024];
	const char *fields[] = { "direction", "identity", "protocol", "port", "portPrefixLen", "rules" };
	const char *values[] = { "'ingress'", "0", "6", "80", "16", "[]" };
	size_t len = 0;

	len += (size_t)snprintf(e + len, sizeof(e) - len, "{");
	for (size_t i = 0; i < 6; i++) {
		const char *v = strcmp(fields[i], field) ? values[i] : value;
		if (v)
			len += (size_t)snprintf(e + len, sizeof(e) - len, "%s'%s':%s", len > 1 ? "," : "", fields[i], v);
	}
	snprintf(e + len, sizeof(e) - len, "}");
	return js("{'type':'endpoints','full':false,'upsert':[{'id':12,'ip':'10.0.0.12','identity':1,"
		  "'entries':[%s]}],'remove':[]}",
		  e);
}

static const char *bad_rule(const char *rule)
{
	return js("{'type':'endpoints','full':false,'upsert':[%s],'remove':[]}",
		  endpoint(12, "10.0.0.12", js("[{'path':'/'},%s]", rule)));
}

static void test_refused(void)
{
	struct rt_table *t = rt_new();
	char big[64];

	CHECK(apply(t, js("{'type':'endpoints','full':true,'upsert':[%s],'remove':[]}",
			  endpoint(1, "10.0.0.1", rules_a))) == 0);

	/* Not JSON, or not the message. */
	REFUSED("", "invalid JSON");
	REFUSED("{\"type\":\"endpoints\",", "invalid JSON");
	REFUSED("{'type':'endpoints'}", "invalid JSON");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[],'remove':[]} x"), "invalid JSON at offset 57");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[],'remove':[],}"), "invalid JSON");
	REFUSED("[]", "not an object");
	REFUSED(js("{'type':'hello'}"), "type: \"hello\" is not endpoints");
	REFUSED(js("{'full':true,'upsert':[],'remove':[]}"), "type: missing");
	REFUSED(js("{'type':'endpoints','full':1,'upsert':[],'remove':[]}"), "full: not a boolean");
	REFUSED(js("{'type':'endpoints','full':true,'remove':[]}"), "upsert: missing");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':{},'remove':[]}"), "upsert: not an array");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[]}"), "remove: missing");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[],'remove':['1']}"), "remove[0]: not a number");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[],'remove':[1,-1]}"), "remove[1]: -1 is out of range");

	/* Endpoints. */
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[7],'remove':[]}"), "upsert[0]: not an object");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'ip':'10.0.0.1','identity':1,'entries':[]}],"
		   "'remove':[]}"),
		"upsert[0] id: missing");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':1.5,'ip':'10.0.0.1','identity':1,"
		   "'entries':[]}],'remove':[]}"),
		"upsert[0] id: 1.5 is not a whole number");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':4294967296,'ip':'10.0.0.1','identity':1,"
		   "'entries':[]}],'remove':[]}"),
		"upsert[0] id: 4294967296 is out of range");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':12,'ip':'10.0.0.256','identity':1,"
		   "'entries':[]}],'remove':[]}"),
		"endpoint 12 ip: \"10.0.0.256\" is not an IPv4 address");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':12,'ip':'fd00::1','identity':1,"
		   "'entries':[]}],'remove':[]}"),
		"endpoint 12 ip: \"fd00::1\" is not an IPv4 address");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':12,'ip':10,'identity':1,'entries':[]}],"
		   "'remove':[]}"),
		"endpoint 12 ip: not a string");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':12,'ip':'10.0.0.1','identity':'x',"
		   "'entries':[]}],'remove':[]}"),
		"endpoint 12 identity: not a number");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':12,'ip':'10.0.0.1','identity':1}],"
		   "'remove':[]}"),
		"endpoint 12 entries: missing");
	REFUSED(js("{'type':'endpoints','full':true,'upsert':[{'id':12,'ip':'10.0.0.1','identity':1,"
		   "'entries':['x']}],'remove':[]}"),
		"endpoint 12 entries[0]: not an object");

	/* Entries. */
	REFUSED(bad_entry("direction", "'both'"), "endpoint 12 entries[0].direction: \"both\" is not ingress or egress");
	REFUSED(bad_entry("direction", NULL), "endpoint 12 entries[0].direction: missing");
	REFUSED(bad_entry("identity", "-1"), "endpoint 12 entries[0].identity: -1 is out of range");
	REFUSED(bad_entry("identity", NULL), "endpoint 12 entries[0].identity: missing");
	REFUSED(bad_entry("protocol", "256"), "endpoint 12 entries[0].protocol: 256 is out of range");
	REFUSED(bad_entry("port", "65536"), "endpoint 12 entries[0].port: 65536 is out of range");
	REFUSED(bad_entry("port", "'80'"), "endpoint 12 entries[0].port: not a number");
	REFUSED(bad_entry("portPrefixLen", "17"), "endpoint 12 entries[0].portPrefixLen: 17 is out of range");
	REFUSED(bad_entry("rules", NULL), "endpoint 12 entries[0].rules: missing");
	REFUSED(bad_entry("rules", "{}"), "endpoint 12 entries[0].rules: not an array");

	/* Rules. */
	REFUSED(bad_rule("'GET'"), "endpoint 12 entries[0].rules[1]: not an object");
	REFUSED(bad_rule("{'path':5}"), "endpoint 12 entries[0].rules[1].path: not a string");
	REFUSED(bad_rule("{'headers':'X'}"), "endpoint 12 entries[0].rules[1].headers: not an array");
	REFUSED(bad_rule("{'headers':['X',1]}"), "endpoint 12 entries[0].rules[1].headers[1]: not a string");
	REFUSED(bad_rule("{'headerMatches':[{'value':'x'}]}"),
		"endpoint 12 entries[0].rules[1].headerMatches[0].name: missing");
	REFUSED(bad_rule("{'headerMatches':['X']}"), "endpoint 12 entries[0].rules[1].headerMatches[0]: not an object");
	REFUSED(bad_rule("{'headerMatches':[{'name':'X','value':1}]}"),
		"endpoint 12 entries[0].rules[1].headerMatches[0].value: not a string");
	REFUSED(bad_rule("{'headerMatches':[{'name':'X','mismatch':'DROP'}]}"),
		"endpoint 12 entries[0].rules[1].headerMatches[0].mismatch: \"DROP\" is not LOG, ADD, DELETE or REPLACE");
	REFUSED(js("{'type':'endpoints','full':false,'upsert':[{'id':12,'ip':'10.0.0.12','identity':1,'entries':"
		   "[{'direction':'ingress','identity':0,'protocol':6,'port':80,'portPrefixLen':16,'rules':[],"
		   "'policy':{'kind':'K','name':'n'}}]}],'remove':[]}"),
		"endpoint 12 entries[0].policy.namespace: missing");

	/* A small error buffer is not overrun. */
	CHECK(rt_apply(t, "[]", 2, big, 8) == -1);
	CHECK(strlen(big) == 7);
	CHECK(rt_apply(t, "[]", 2, NULL, 0) == -1);

	/* Unknown fields are ignored; numbers may be spelled as floats. */
	CHECK(apply(t, js("{'type':'endpoints','full':false,'extra':{'a':[1]},'upsert':[{'id':12,'ip':'10.0.0.12',"
			  "'identity':1,'labels':['x'],'entries':[{'direction':'egress','identity':0,'protocol':6.0,"
			  "'port':80,'portPrefixLen':16,'note':null,'rules':[{'path':'/x','secret':true}]}]}],"
			  "'remove':[]}")) == 0);
	CHECK(rt_size(t) == 2);
	CHECK(judge(rt_match(rt_endpoint_by_id(t, 12), RT_EGRESS, 1, 80), "GET", "/x", "", NULL) == 1);
	rt_free(t);
}

int main(void)
{
	test_tutorial();
	test_anchoring();
	test_host();
	test_empty_means_any();
	test_headers();
	test_header_matches();
	test_several_rules();
	test_js_syntax();
	test_entry_selection();
	test_policy_name();
	test_apply();
	test_many();
	test_atomic();
	test_uncompilable();
	test_refused();
	rt_free(table);
	printf("rules_test: %d checks, %d failed\n", checks, failed);
	return failed ? 1 : 0;
}
