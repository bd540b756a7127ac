/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Minimal kernel and UAPI definitions for flowbus's BPF programs, so that
 * building them needs neither kernel headers nor a generated vmlinux.h.
 *
 * The UAPI part (__sk_buff prefix, constants) has a fixed ABI. The kernel
 * structs below carry only the fields the programs read and are marked
 * preserve_access_index: the loader relocates every access against the
 * running kernel's BTF (CO-RE), so their layout here does not matter.
 */
#ifndef FLOWBUS_H
#define FLOWBUS_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

/* UAPI: map types, flags, helpers' constants (include/uapi/linux/bpf.h). */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#define BPF_F_CURRENT_CPU 0xffffffffULL
#define BPF_F_NO_COMMON_LRU (1U << 1)
#define BPF_ANY 0
/* bpf_ringbuf_output flags and bpf_ringbuf_query's question. */
#define BPF_RB_NO_WAKEUP (1ULL << 0)
#define BPF_RB_FORCE_WAKEUP (1ULL << 1)
#define BPF_RB_AVAIL_DATA 0

/*
 * The context of TC programs. Only the prefix up to the fields used is
 * declared; offsets are ABI.
 */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

/* TC verdict: continue with the next program (tcx) or the default action (cls_bpf). */
#define TC_ACT_UNSPEC (-1)

/* Kernel structs, relocated with CO-RE. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	__u32 hash;
	__be16 protocol;
	__u16 network_header;
	__u16 mac_header;
	unsigned int tail;
	unsigned char *head;
	unsigned char *data;
	int skb_iif;
} __attribute__((preserve_access_index));

#endif /* FLOWBUS_H */
