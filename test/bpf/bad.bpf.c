// SPDX-License-Identifier: GPL-2.0
/* A program the verifier must reject: it reads past the packet without a bounds check. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int unchecked_read(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;

	return data[100];
}

char _license[] SEC("license") = "GPL";
