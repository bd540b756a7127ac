// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flowbus's datapath programs.
 *
 * trace_ingress/trace_egress are TC programs (tcx or cls_bpf) that parse
 * Ethernet, IPv4, IPv6, TCP, UDP, SCTP and ICMP and emit one TraceNotify
 * sample (Cilium's layout, version 1) per packet, or, with aggregation on,
 * per new connection, TCP flag change and refresh interval, followed by the
 * first capture_len bytes of the packet.
 *
 * trace_rx/trace_tx emit the same samples from the BTF tracepoints
 * net:netif_receive_skb (a device received a packet, before TC ingress) and
 * net:net_dev_start_xmit (a device is handed a packet, after TC egress and
 * the qdisc), which do not depend on TC: no program attached to TC can hide
 * a packet from them. They run for every packet of every device and network
 * namespace and leave at once for devices not in `ifaces` or namespaces not
 * in `netns`.
 *
 * on_kfree_skb is a BTF tracepoint on skb:kfree_skb that emits one
 * DropNotify sample (Cilium's layout, version 2) per packet the kernel drops
 * for a reason worth reporting, in one of the watched network namespaces.
 *
 * Every sample goes to the BPF ring buffer `ring` (one for all CPUs) when
 * use_ringbuf is set, else to the perf event array `events`.
 */
#include "flowbus.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

/* Cilium's monitor message types and observation points. */
#define NOTIFY_DROP 1
#define NOTIFY_TRACE 4
#define TRACE_FROM_NETWORK 10
#define TRACE_TO_NETWORK 11
/* TraceNotify reasons: the connection state of the packet. */
#define TRACE_REASON_CT_NEW 0
#define TRACE_REASON_CT_ESTABLISHED 1
#define TRACE_REASON_CT_REPLY 2
#define TRACE_REASON_UNKNOWN 5

/* Classifier flags of TraceNotify/DropNotify (which layer the packet starts at). */
#define CLS_FLAG_IPV6 (1 << 0)
#define CLS_FLAG_L3_DEV (1 << 1)

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define IPPROTO_SCTP 132
#define IPV6_HOPOPTS 0

/* Largest number of packet bytes a drop sample copies. */
#define MAX_DROP_CAPTURE 1536
/* Entries of drop_reasons; larger kernel reasons share the last one. */
#define DROP_REASONS 1024

/* Set by the loader before the programs are loaded. */
volatile const __u32 capture_len = 128;
volatile const __u32 aggregate = 0;
volatile const __u64 aggregation_interval_ns = 5000000000ULL;
volatile const __u32 use_ringbuf = 0;
/* Ring buffer: wake the reader once this many bytes wait (0: every sample). */
volatile const __u64 ring_wakeup_bytes = 0;

/* Cilium's struct trace_notify, version 1 (48 bytes). */
struct trace_notify {
	__u8 type;
	__u8 subtype;
	__u16 source;
	__u32 hash;
	__u32 len_orig;
	__u16 len_cap;
	__u8 version;
	__u8 ext_version;
	__u32 src_label;
	__u32 dst_label;
	__u16 dst_id;
	__u8 reason;
	__u8 flags;
	__u32 ifindex;
	__u8 orig_ip[16];
};

/* Cilium's struct drop_notify, version 2 (40 bytes). */
struct drop_notify {
	__u8 type;
	__u8 subtype;
	__u16 source;
	__u32 hash;
	__u32 len_orig;
	__u16 len_cap;
	__u8 version;
	__u8 ext_version;
	__u32 src_label;
	__u32 dst_label;
	__u32 dst_id;
	__u16 line;
	__u8 file;
	__s8 ext_error;
	__u32 ifindex;
	__u8 flags;
	/* flowbus's own use of Cilium's padding: where the packet was dropped
	 * (DROP_DIR_*); Cilium's decoders ignore it. */
	__u8 dir;
	__u8 pad[2];
};

#define DROP_DIR_INGRESS 1 /* on its way in: it arrived on this device */
#define DROP_DIR_EGRESS 2  /* on its way out: made here, or forwarded */

/* A connection as seen in one direction on one interface. */
struct conn_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 l3proto; /* ethertype, network order */
	__u8 l4proto;
	__u8 dir;      /* 0 ingress, 1 egress */
	__u32 ifindex;
};

struct conn_state {
	__u64 last_emit_ns;
	__u8 tcp_flags; /* every flag bit seen so far */
	__u8 reply;     /* 1: this direction answers the one that came first */
	__u8 pad[6];
};

/* What to do with a kernel drop reason. */
struct drop_reason_cfg {
	__u8 cilium_reason; /* DropNotify subtype; 0 = DROP_REASON_UNKNOWN */
	__u8 report;        /* 1: emit a sample */
};

/* Per-interface settings (key: ifindex). */
struct iface_cfg {
	__u32 flags; /* CLS_FLAG_L3_DEV for devices without an Ethernet header */
	__u32 pad;
	__u64 packets[2]; /* packets the programs saw: ingress, egress */
};

/* Indexes of the counters array. */
enum {
	CNT_TRACE_SENT,
	CNT_TRACE_LOST,     /* perf output failed (ring full) */
	CNT_TRACE_AGGREGATED, /* suppressed by aggregation */
	CNT_DROP_SENT,
	CNT_DROP_LOST,
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* set by the loader */
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct iface_cfg);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); /* netns inode number */
	__type(value, __u8);
} netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DROP_REASONS);
	__type(key, __u32);
	__type(value, struct drop_reason_cfg);
} drop_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Scratch space for a drop sample: header and packet bytes. */
struct drop_sample {
	struct drop_notify hdr;
	__u8 pkt[MAX_DROP_CAPTURE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_sample);
} drop_scratch SEC(".maps");

/* Scratch space for a trace sample written to the ring buffer. */
struct trace_sample {
	struct trace_notify hdr;
	__u8 pkt[MAX_DROP_CAPTURE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace_sample);
} trace_scratch SEC(".maps");

/* ring_output writes one sample to the ring buffer, waking the reader
 * only once enough bytes wait. */
static __always_inline long ring_output(void *data, __u64 size)
{
	__u64 flags = 0;
	if (ring_wakeup_bytes) {
		flags = BPF_RB_NO_WAKEUP;
		if (bpf_ringbuf_query(&ring, BPF_RB_AVAIL_DATA) + size >= ring_wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
	}
	return bpf_ringbuf_output(&ring, data, size, flags);
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

/*
 * A packet to read: a TC program's context, or, for the tracepoint
 * programs, a frame in kernel memory.
 */
struct pkt {
	struct __sk_buff *skb; /* TC */
	unsigned char *base;   /* tracepoints: the frame's first byte */
	__u32 linear;          /* tracepoints: the bytes readable from base */
	__u32 len;             /* the frame's length */
	__u32 hash;
	__u32 ifindex;
	__u16 protocol;        /* ethertype, network order */
};

/*
 * load copies len bytes at offset off of the packet to to. kernel (a
 * constant at each call, so that each program keeps one branch) says that
 * the packet is a frame in kernel memory.
 */
static __always_inline long load(struct pkt *p, const int kernel, __u32 off, void *to, __u32 len)
{
	if (!kernel)
		return bpf_skb_load_bytes(p->skb, off, to, len);
	if (off > p->linear || len > p->linear - off)
		return -1;
	return bpf_probe_read_kernel(to, len, p->base + off);
}

/*
 * parse fills k with the packet's addresses, ports and protocols and
 * returns the TCP flags (0 if not TCP). l3 says that the packet starts
 * at the network header.
 */
static __always_inline __u8 parse(struct pkt *p, const int kernel, int l3, struct conn_key *k, __u8 *is_v6)
{
	__u32 off = 0;
	__u16 proto;
	__u8 l4 = 0;
	int frag = 0;

	if (l3) {
		proto = p->protocol;
	} else {
		if (load(p, kernel, 12, &proto, sizeof(proto)) < 0)
			return 0;
		off = ETH_HLEN;
	}
	k->l3proto = proto;

	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 ip[20];
		if (load(p, kernel, off, ip, sizeof(ip)) < 0)
			return 0;
		__builtin_memcpy(k->saddr, &ip[12], 4);
		__builtin_memcpy(k->daddr, &ip[16], 4);
		l4 = ip[9];
		/* A fragment other than an unfragmented packet: no ports. */
		frag = ((ip[6] & 0x3f) | ip[7]) != 0;
		off += (ip[0] & 0x0f) * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 ip6[40];
		if (load(p, kernel, off, ip6, sizeof(ip6)) < 0)
			return 0;
		*is_v6 = 1;
		__builtin_memcpy(k->saddr, &ip6[8], 16);
		__builtin_memcpy(k->daddr, &ip6[24], 16);
		l4 = ip6[6];
		off += 40;
		if (l4 == IPV6_HOPOPTS) {
			__u8 ext[2];
			if (load(p, kernel, off, ext, sizeof(ext)) < 0)
				return 0;
			l4 = ext[0];
			off += (ext[1] + 1) * 8;
		}
	} else {
		return 0;
	}
	k->l4proto = l4;
	if (frag)
		return 0;

	switch (l4) {
	case IPPROTO_TCP: {
		__u8 tcp[14];
		if (load(p, kernel, off, tcp, sizeof(tcp)) < 0)
			return 0;
		__builtin_memcpy(&k->sport, &tcp[0], 2);
		__builtin_memcpy(&k->dport, &tcp[2], 2);
		return tcp[13];
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u16 ports[2];
		if (load(p, kernel, off, ports, sizeof(ports)) < 0)
			return 0;
		k->sport = ports[0];
		k->dport = ports[1];
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		/* type, code and (for echo) the identifier stand in for ports */
		__u8 icmp[6];
		if (load(p, kernel, off, icmp, sizeof(icmp)) < 0)
			return 0;
		__builtin_memcpy(&k->sport, &icmp[4], 2);
		k->dport = ((__u16)icmp[0] << 8) | icmp[1];
		return 0;
	}
	}
	return 0;
}

#define TCP_SYN 0x02
#define TCP_ACK 0x10

/*
 * first_reply says whether the first packet seen of a connection in one
 * direction answers the other direction: a TCP SYN-ACK does, a SYN does not;
 * otherwise it does when the other direction was seen first.
 */
static __always_inline __u8 first_reply(struct conn_key *k, __u8 tcp_flags)
{
	if (tcp_flags & TCP_SYN)
		return (tcp_flags & TCP_ACK) ? 1 : 0;
	struct conn_key r = {};
	__builtin_memcpy(r.saddr, k->daddr, 16);
	__builtin_memcpy(r.daddr, k->saddr, 16);
	r.sport = k->dport;
	r.dport = k->sport;
	r.l3proto = k->l3proto;
	r.l4proto = k->l4proto;
	r.dir = k->dir ^ 1;
	r.ifindex = k->ifindex;
	struct conn_state *rs = bpf_map_lookup_elem(&conns, &r);
	return rs ? !rs->reply : 0;
}

/*
 * track looks the packet's connection up in conns, creating the entry,
 * sets *reason to its TraceNotify reason (new, established or reply) and
 * returns whether to emit a sample: always without aggregation; with it,
 * for the first packet, a new TCP flag, or when the interval passed.
 */
static __always_inline int track(struct conn_key *k, __u8 tcp_flags, __u8 *reason)
{
	__u64 now = bpf_ktime_get_ns();
	struct conn_state *st = bpf_map_lookup_elem(&conns, k);

	if (!st) {
		struct conn_state fresh = {
			.last_emit_ns = now,
			.tcp_flags = tcp_flags,
		};
		fresh.reply = first_reply(k, tcp_flags);
		*reason = fresh.reply ? TRACE_REASON_CT_REPLY : TRACE_REASON_CT_NEW;
		bpf_map_update_elem(&conns, k, &fresh, BPF_ANY);
		return 1;
	}
	*reason = st->reply ? TRACE_REASON_CT_REPLY : TRACE_REASON_CT_ESTABLISHED;
	__u8 seen = st->tcp_flags | tcp_flags;
	if (!aggregate)
		return 1;
	if (seen != st->tcp_flags || now - st->last_emit_ns >= aggregation_interval_ns) {
		st->tcp_flags = seen;
		st->last_emit_ns = now;
		return 1;
	}
	return 0;
}

/*
 * trace emits the sample of one packet (of cfg's interface, when not NULL)
 * seen at obs_point in direction dir. ctx is the program's context.
 */
static __always_inline void trace(void *ctx, struct pkt *p, const int kernel, struct iface_cfg *cfg, __u8 obs_point, __u8 dir)
{
	__u32 ifindex = p->ifindex;
	__u8 flags = cfg ? (__u8)cfg->flags : 0;
	__u8 is_v6 = 0;
	__u8 reason = TRACE_REASON_UNKNOWN;

	if (cfg)
		__sync_fetch_and_add(&cfg->packets[dir & 1], 1);

	struct conn_key k = {};
	__u8 tcp_flags = parse(p, kernel, flags & CLS_FLAG_L3_DEV, &k, &is_v6);
	if (k.l4proto == IPPROTO_ICMP || k.l4proto == IPPROTO_ICMPV6) {
		/* Echo and its reply: the type tells; other ICMP has no direction. */
		__u8 type = k.dport >> 8;
		if (type == 8 || type == 128)
			reason = TRACE_REASON_CT_NEW;
		else if (type == 0 || type == 129)
			reason = TRACE_REASON_CT_REPLY;
		if (aggregate) {
			k.dir = dir;
			k.ifindex = ifindex;
			__u8 ignored;
			if (!track(&k, 0, &ignored)) {
				count(CNT_TRACE_AGGREGATED);
				return;
			}
		}
	} else if (k.l4proto != 0) {
		k.dir = dir;
		k.ifindex = ifindex;
		if (!track(&k, tcp_flags, &reason)) {
			count(CNT_TRACE_AGGREGATED);
			return;
		}
	} else if (aggregate) {
		/* Not IP (ARP...): aggregated by protocol alone. */
		k.dir = dir;
		k.ifindex = ifindex;
		__u8 ignored;
		if (!track(&k, 0, &ignored)) {
			count(CNT_TRACE_AGGREGATED);
			return;
		}
	}
	if (is_v6)
		flags |= CLS_FLAG_IPV6;

	__u64 cap = p->len;
	if (cap > capture_len)
		cap = capture_len;

	struct trace_notify msg = {
		.type = NOTIFY_TRACE,
		.subtype = obs_point,
		.hash = p->hash,
		.len_orig = p->len,
		.len_cap = (__u16)cap,
		.version = 1,
		.reason = reason,
		.flags = flags,
		.ifindex = ifindex,
	};
	long err;
	if (!kernel && !use_ringbuf) {
		/* The kernel appends cap bytes of the packet to msg. */
		err = bpf_perf_event_output(ctx, &events, (cap << 32) | BPF_F_CURRENT_CPU, &msg, sizeof(msg));
	} else {
		__u32 zero = 0;
		struct trace_sample *s = bpf_map_lookup_elem(&trace_scratch, &zero);
		if (!s)
			return;
		s->hdr = msg;
		if (kernel && cap > p->linear)
			cap = p->linear; /* the linear part only */
		if (cap > MAX_DROP_CAPTURE)
			cap = MAX_DROP_CAPTURE;
		s->hdr.len_cap = (__u16)cap;
		err = 0;
		if (cap > 0) {
			if (kernel)
				err = bpf_probe_read_kernel(s->pkt, cap, p->base);
			else
				err = bpf_skb_load_bytes(p->skb, 0, s->pkt, cap);
		}
		if (err == 0) {
			if (use_ringbuf)
				err = ring_output(s, sizeof(s->hdr) + cap);
			else
				err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, s, sizeof(s->hdr) + cap);
		}
	}
	if (err < 0)
		count(CNT_TRACE_LOST);
	else
		count(CNT_TRACE_SENT);
}

static __always_inline int trace_tc(struct __sk_buff *skb, __u8 obs_point, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	struct iface_cfg *cfg = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct pkt p = {
		.skb = skb,
		.len = skb->len,
		.hash = skb->hash,
		.ifindex = ifindex,
		.protocol = (__u16)skb->protocol,
	};
	trace(skb, &p, 0, cfg, obs_point, dir);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int trace_ingress(struct __sk_buff *skb)
{
	return trace_tc(skb, TRACE_FROM_NETWORK, 0);
}

SEC("tc")
int trace_egress(struct __sk_buff *skb)
{
	return trace_tc(skb, TRACE_TO_NETWORK, 1);
}

/*
 * trace_kernel samples a packet a device tracepoint reports, if its device
 * is watched: in a watched network namespace and in `ifaces`.
 */
static __always_inline void trace_kernel(void *ctx, struct sk_buff *skb, __u8 obs_point, __u8 dir)
{
	/* BTF tracepoints read kernel memory directly (CO-RE relocated). */
	struct net_device *dev = skb->dev;
	if (!dev)
		return;
	__u32 ifindex = dev->ifindex;
	struct iface_cfg *cfg = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!cfg)
		return;
	__u32 inum = dev->nd_net.net->ns.inum;
	if (!bpf_map_lookup_elem(&netns, &inum))
		return;

	/*
	 * The frame starts at the Ethernet header (the mac header, which the
	 * receive path sets and has pulled, and which the transmit path sets
	 * at data), or, on devices without one, at data (the IP header).
	 */
	unsigned char *head = skb->head;
	unsigned char *data = skb->data;
	__u32 data_off = data - head;
	__u32 start = data_off;
	if (!(cfg->flags & CLS_FLAG_L3_DEV)) {
		__u16 mh = skb->mac_header;
		if (mh == 0xffff || mh > data_off)
			return;
		start = mh;
	}
	__u32 tail = skb->tail;
	__u32 len = skb->len + data_off - start;
	if (tail <= start)
		return;
	struct pkt p = {
		.base = head + start,
		.linear = tail - start,
		.len = len,
		.hash = skb->hash,
		.ifindex = ifindex,
		.protocol = skb->protocol,
	};
	trace(ctx, &p, 1, cfg, obs_point, dir);
}

SEC("tp_btf/netif_receive_skb")
int trace_rx(__u64 *ctx)
{
	trace_kernel(ctx, (struct sk_buff *)ctx[0], TRACE_FROM_NETWORK, 0);
	return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int trace_tx(__u64 *ctx)
{
	trace_kernel(ctx, (struct sk_buff *)ctx[0], TRACE_TO_NETWORK, 1);
	return 0;
}

SEC("tp_btf/kfree_skb")
int on_kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	__u32 key = reason < DROP_REASONS ? reason : DROP_REASONS - 1;
	struct drop_reason_cfg *rc = bpf_map_lookup_elem(&drop_reasons, &key);

	if (!rc || !rc->report)
		return 0;

	/* Only drops in the watched network namespaces. */
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	__u32 inum = 0, ifindex = 0;
	if (dev) {
		inum = BPF_CORE_READ(dev, nd_net.net, ns.inum);
		ifindex = BPF_CORE_READ(dev, ifindex);
	} else {
		struct sock *sk = BPF_CORE_READ(skb, sk);
		if (!sk)
			return 0;
		inum = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	if (!bpf_map_lookup_elem(&netns, &inum))
		return 0;

	/* Only IP packets: the network header must hold an IPv4 or IPv6 header. */
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 mh = BPF_CORE_READ(skb, mac_header);
	__u8 first;
	if (bpf_probe_read_kernel(&first, 1, head + nh) < 0)
		return 0;
	__be16 proto = BPF_CORE_READ(skb, protocol);
	__u8 flags;
	if ((first >> 4) == 4 && (first & 0x0f) >= 5 && proto == bpf_htons(ETH_P_IP))
		flags = 0;
	else if ((first >> 4) == 6 && proto == bpf_htons(ETH_P_IPV6))
		flags = CLS_FLAG_IPV6;
	else
		return 0;

	/* Start at the Ethernet header when there is one right before the IP header. */
	__u32 start = nh;
	if (mh != 0xffff && mh + ETH_HLEN == nh)
		start = mh;
	else
		flags |= CLS_FLAG_L3_DEV;

	__u32 data_off = BPF_CORE_READ(skb, data) - head;
	__u32 len = BPF_CORE_READ(skb, len);
	__u32 tail = BPF_CORE_READ(skb, tail);
	__s64 orig = (__s64)len + data_off - start;
	if (orig <= 0 || tail <= start)
		return 0;

	__u32 zero = 0;
	struct drop_sample *s = bpf_map_lookup_elem(&drop_scratch, &zero);
	if (!s)
		return 0;

	__u64 cap = orig;
	if (cap > tail - start)
		cap = tail - start; /* linear part only */
	if (cap > capture_len)
		cap = capture_len;
	if (cap > MAX_DROP_CAPTURE)
		cap = MAX_DROP_CAPTURE;
	if (bpf_probe_read_kernel(s->pkt, cap, head + start) < 0)
		return 0;

	/* Received packets carry the device they arrived on. */
	__u32 iif = BPF_CORE_READ(skb, skb_iif);
	__u8 ddir = DROP_DIR_EGRESS;
	if (iif != 0 && (ifindex == 0 || iif == ifindex))
		ddir = DROP_DIR_INGRESS;

	s->hdr = (struct drop_notify){
		.type = NOTIFY_DROP,
		.subtype = rc->cilium_reason,
		.hash = BPF_CORE_READ(skb, hash),
		.len_orig = (__u32)orig,
		.len_cap = (__u16)cap,
		.version = 2,
		/* The kernel's own reason travels in `line`; file 0 is no Cilium file. */
		.line = reason < 0xffff ? (__u16)reason : 0xffff,
		.ifindex = ifindex,
		.flags = flags,
		.dir = ddir,
	};
	long err;
	if (use_ringbuf)
		err = ring_output(s, sizeof(s->hdr) + cap);
	else
		err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, s, sizeof(s->hdr) + cap);
	if (err < 0)
		count(CNT_DROP_LOST);
	else
		count(CNT_DROP_SENT);
	return 0;
}
