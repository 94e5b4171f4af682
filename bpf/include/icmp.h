/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: the ICMPv4 header. <linux/icmp.h> pulls in glibc's <sys/socket.h>, which does not
 * build for the BPF target on a machine without 32-bit libc headers; this is all we need.
 */
#ifndef __HYPHA_ICMP_H
#define __HYPHA_ICMP_H

#include <linux/types.h>

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11

struct icmp4hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 echo_id;
	__be16 echo_sequence;
};

#endif
