/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: drop reasons, with Cilium's numbers (pkg/monitor/api drop reasons). The agent
 * names them; never renumber or reuse one.
 */
#ifndef __HYPHA_DROP_H
#define __HYPHA_DROP_H

#define DROP_INVALID_SOURCE_IP 132
#define DROP_POLICY_DENIED 133
#define DROP_INVALID_PACKET 134
#define DROP_CT_INVALID_HEADER 135
#define DROP_CT_UNKNOWN_PROTO 137
#define DROP_UNSUPPORTED_L3 139
#define DROP_WRITE_ERROR 141
#define DROP_UNKNOWN_L4 142
#define DROP_CSUM_L3 153
#define DROP_CSUM_L4 154
#define DROP_CT_CREATE_FAILED 155
#define DROP_FRAG_NOT_SUPPORTED 157
#define DROP_NO_SERVICE 158
#define DROP_NO_CONFIG 165
#define DROP_NAT_NO_MAPPING 167
#define DROP_NO_FIB 169
#define DROP_PROXY_LOOKUP_FAILED 178 /* Hubble: SOCKET_LOOKUP_FAILED */
#define DROP_PROXY_SET_FAILED 179
#define DROP_PROXY_UNKNOWN_PROTO 180
#define DROP_POLICY_DENY 181
#define DROP_AUTH_REQUIRED 189

#endif
