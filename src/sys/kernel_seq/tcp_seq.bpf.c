// kaprobe's TCP socket iterator (SEC "iter/tcp"): for every ESTABLISHED TCP socket of the
// network namespace the iterator was created in, one fixed-layout `struct kp_tcp_seq` record,
// written with bpf_seq_write. src/sys/kernel_seq.rs loads it and parses the records; keep the
// layout of the two in step (the record starts with its own size and a version).
//
// The kernel's types are declared here with only the fields read, under
// preserve_access_index: the loader relocates every offset against the running kernel's BTF
// (CO-RE), so neither vmlinux.h nor bpftool is needed. Field names equal the kernel's; the
// kernel nests some of them in anonymous unions and structs, which the relocation looks into.
//
// Build: clang -target bpf -O2 -g -c tcp_seq.bpf.c (build.rs); -g emits the BTF that carries
// the relocations.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define KP_AF_INET 2
#define KP_AF_INET6 10
#define KP_TCP_ESTABLISHED 1

#define KP_RECORD_VERSION 1

#define KP_TSTAMP_OK (1 << 0)
#define KP_USEC_TS (1 << 1)

struct in6_addr {
	__u8 s6_addr[16];
} __attribute__((preserve_access_index));

struct sock_common {
	__u32 skc_daddr;
	__u32 skc_rcv_saddr;
	__u16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	int skc_bound_dev_if;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct tcp_options_received {
	__u32 ts_recent;
	__u16 tstamp_ok : 1, snd_wscale : 4, rcv_wscale : 4;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 rcv_nxt;
	__u32 rcv_wup;
	__u32 rcv_wnd;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 tsoffset;
	__u64 tcp_wstamp_ns;
	// Linux 6.7 and later: TSval counts microseconds on this connection.
	__u8 tcp_usec_ts : 1;
	struct tcp_options_received rx_opt;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

// All integers in host byte order, ports included; addresses in network order (v4 in the
// first 4 bytes, the rest zero). 104 bytes, no implicit padding.
struct kp_tcp_seq {
	__u16 size;	// sizeof(struct kp_tcp_seq)
	__u8 version;	// KP_RECORD_VERSION
	__u8 flags;	// KP_TSTAMP_OK, KP_USEC_TS
	__u16 family;	// AF_INET or AF_INET6: the socket's own family
	__u16 local_port;
	__u16 remote_port;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u32 ifindex;	// the device the socket is bound to, 0 if none
	__u8 local[16];
	__u8 remote[16];
	__u64 cookie;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 rcv_nxt;
	__u32 rcv_wup;
	__u32 rcv_wnd;
	__u32 ts_recent;
	__u32 tsoffset;
	__u32 reserved;
	__u64 wstamp_ns;
	__u64 read_ns;	// bpf_ktime_get_ns() (CLOCK_MONOTONIC) when this socket was read
};

_Static_assert(sizeof(struct kp_tcp_seq) == 104, "record layout");

SEC("iter/tcp")
int kp_tcp_seq(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct kp_tcp_seq rec;
	struct tcp_sock *tp;
	struct tcp_options_received *rx;

	// The iteration's end, then request and TIME_WAIT sockets (not full sockets): skip.
	if (!skc || skc->skc_state != KP_TCP_ESTABLISHED)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;

	__builtin_memset(&rec, 0, sizeof(rec));
	rec.size = sizeof(rec);
	rec.version = KP_RECORD_VERSION;
	rec.family = skc->skc_family;
	rec.local_port = skc->skc_num;
	rec.remote_port = bpf_ntohs(skc->skc_dport);
	rec.ifindex = skc->skc_bound_dev_if;
	if (rec.family == KP_AF_INET6) {
		__builtin_memcpy(rec.local, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(rec.remote, &skc->skc_v6_daddr, 16);
	} else {
		__builtin_memcpy(rec.local, &skc->skc_rcv_saddr, 4);
		__builtin_memcpy(rec.remote, &skc->skc_daddr, 4);
	}
	// The socket's cookie as sock_diag reports it: the helper assigns one when the socket
	// has none yet, so sock_diag later shows the same number.
	rec.cookie = bpf_get_socket_cookie(skc);

	rec.snd_nxt = tp->snd_nxt;
	rec.snd_una = tp->snd_una;
	rec.rcv_nxt = tp->rcv_nxt;
	rec.rcv_wup = tp->rcv_wup;
	rec.rcv_wnd = tp->rcv_wnd;
	rec.tsoffset = tp->tsoffset;
	rec.wstamp_ns = tp->tcp_wstamp_ns;

	// Through a pointer variable: clang 14 + libbpf 1.1 emit bitfield reads of
	// `&tp->rx_opt` directly that the verifier refuses.
	rx = &tp->rx_opt;
	rec.ts_recent = rx->ts_recent;
	if (BPF_CORE_READ_BITFIELD(rx, tstamp_ok))
		rec.flags |= KP_TSTAMP_OK;
	rec.rcv_wscale = BPF_CORE_READ_BITFIELD(rx, rcv_wscale);
	rec.snd_wscale = BPF_CORE_READ_BITFIELD(rx, snd_wscale);
	if (bpf_core_field_exists(tp->tcp_usec_ts) && BPF_CORE_READ_BITFIELD(tp, tcp_usec_ts))
		rec.flags |= KP_USEC_TS;

	rec.read_ns = bpf_ktime_get_ns();
	bpf_seq_write(seq, &rec, sizeof(rec));
	return 0;
}

// The object's licence string is a kernel requirement, not this file's licence (the
// project's): the kernel lets only programs that declare a GPL-compatible licence call
// GPL-only helpers, and iterators need them (bpf_seq_write).
char LICENSE[] SEC("license") = "GPL";
