/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: types and constants every datapath program shares. Numbers follow Cilium
 * (identities, event types, trace points, drop reasons) so Hubble's vocabulary applies
 * unchanged. A retired number stays reserved.
 */
#ifndef __HYPHA_COMMON_H
#define __HYPHA_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Reserved identities. */
#define ID_UNKNOWN 0
#define ID_HOST 1
#define ID_WORLD 2

/* Event types (Cilium's monitor API). */
#define EVENT_DROP 1
#define EVENT_TRACE 4
#define EVENT_POLICY_VERDICT 5

/* Trace observation points. */
#define OBS_TO_ENDPOINT 0
#define OBS_TO_PROXY 1
#define OBS_FROM_ENDPOINT 5

/* Directions, as the policy map and events use them. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Connection tracking states reported in events. */
#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_REPLY 2
#define CT_RELATED 3

/* Verdicts in events. */
#define VERDICT_FORWARDED 1
#define VERDICT_DROPPED 2
#define VERDICT_REDIRECTED 4

/* skb->mark for traffic sent to an L7 proxy: magic in the low half, the proxy port above. */
#define MARK_MAGIC_TO_PROXY 0x0200

#define __hy_inline static __always_inline

#endif
