/*
 * Lab helper: a TCP echo server on lwIP (Debian liblwip-dev, lwIP 2.1.3), the TCP/IP stack of
 * most IoT devices, as a peer for kaprobe (tests/lab_peers.rs compiles and runs it).
 *
 *   lwippeer PORT IPV4 GATEWAY4 [IPV6 ...]
 *
 * NO_SYS=0: tcpip_init() starts lwIP's own thread, and the unix port's tapif netif (in the
 * library) attaches to the TAP device named by $PRECONFIGURED_TAPIF (the test sets it, so the
 * port does not run ifconfig) and reads it on a thread of its own. lwIP owns IPV4 (/24, with
 * GATEWAY4 as its router: lwIP has one IPv4 address per netif, so the client's on-link prefix
 * is reached through the client itself) and each IPV6 (/64, static, preferred at once).
 * Every connection on PORT echoes what it receives. Prints "ready" once the netif is up, and
 * exits when stdin reaches EOF (it never outlives the test). SIGKILL is a crash: no FIN or RST
 * leaves, and the next instance starts with an empty connection table.
 *
 * The compile options must be the library's own: lwipopts.h comes from the package.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lwip/init.h"
#include "lwip/ip_addr.h"
#include "lwip/mld6.h"
#include "lwip/netif.h"
#include "lwip/sys.h"
#include "lwip/tcp.h"
#include "lwip/tcpip.h"
#include "netif/tapif.h"

static struct netif tap;
static sys_sem_t up;
static int port;
static char **v4;   /* address, gateway */
static char **v6;   /* NULL-terminated */

static void fail(const char *what)
{
    fprintf(stderr, "lwippeer: %s\n", what);
    exit(1);
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
    (void)arg;
    (void)pcb;
    (void)len;
    return ERR_OK;
}

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    (void)arg;
    if (p == NULL || err != ERR_OK) {
        /* The client closed its side: close ours too. */
        if (p != NULL)
            pbuf_free(p);
        tcp_arg(pcb, NULL);
        tcp_recv(pcb, NULL);
        if (tcp_close(pcb) != ERR_OK)
            tcp_abort(pcb);
        return ERR_ABRT;
    }
    for (struct pbuf *q = p; q != NULL; q = q->next) {
        /* Echoes are short; a full send buffer would only shorten the echo. */
        if (tcp_write(pcb, q->payload, q->len, TCP_WRITE_FLAG_COPY) != ERR_OK)
            break;
    }
    tcp_output(pcb);
    tcp_recved(pcb, p->tot_len);
    pbuf_free(p);
    return ERR_OK;
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    (void)arg;
    if (err != ERR_OK || pcb == NULL)
        return ERR_VAL;
    tcp_recv(pcb, on_recv);
    tcp_sent(pcb, on_sent);
    return ERR_OK;
}

/* Runs on lwIP's thread (core locked). */
static void init_done(void *arg)
{
    (void)arg;
    ip4_addr_t addr, mask, gw;
    if (!ip4addr_aton(v4[0], &addr) || !ip4addr_aton(v4[1], &gw))
        fail("bad IPv4 address or gateway");
    IP4_ADDR(&mask, 255, 255, 255, 0);
    if (netif_add(&tap, &addr, &mask, &gw, NULL, tapif_init, tcpip_input) == NULL)
        fail("netif_add (tapif) failed");
    netif_set_default(&tap);
    for (char **a = v6; *a != NULL; a++) {
        ip6_addr_t a6;
        s8_t idx;
        if (!ip6addr_aton(*a, &a6))
            fail("bad IPv6 address");
        if (netif_add_ip6_address(&tap, &a6, &idx) != ERR_OK)
            fail("netif_add_ip6_address failed");
        /* Static and preferred now: no duplicate address detection delay. DAD would have
           joined the address's solicited-node group on its way: join it here. */
        netif_ip6_addr_set_state(&tap, idx, IP6_ADDR_PREFERRED);
        ip6_addr_t group;
        ip6_addr_set_solicitednode(&group, a6.addr[3]);
        if (mld6_joingroup_netif(&tap, &group) != ERR_OK)
            fail("mld6_joingroup_netif failed");
    }
    netif_set_up(&tap);

    struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_ANY);
    if (pcb == NULL)
        fail("tcp_new");
    if (tcp_bind(pcb, IP_ANY_TYPE, (u16_t)port) != ERR_OK)
        fail("tcp_bind");
    struct tcp_pcb *lpcb = tcp_listen(pcb);
    if (lpcb == NULL)
        fail("tcp_listen");
    tcp_accept(lpcb, on_accept);
    sys_sem_signal(&up);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: lwippeer PORT IPV4 GATEWAY4 [IPV6 ...]\n");
        return 2;
    }
    port = atoi(argv[1]);
    if (port <= 0 || port > 65535)
        fail("bad port");
    v4 = &argv[2];
    v6 = &argv[4];
    if (getenv("PRECONFIGURED_TAPIF") == NULL)
        fail("set PRECONFIGURED_TAPIF to the TAP device");
    /* lwIP's LWIP_RAND is rand(). */
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    if (sys_sem_new(&up, 0) != ERR_OK)
        fail("sys_sem_new");
    tcpip_init(init_done, NULL);
    sys_arch_sem_wait(&up, 0);
    printf("ready\n");
    fflush(stdout);

    /* Never outlive the parent: EOF on stdin ends the process. */
    char sink[64];
    while (read(0, sink, sizeof sink) > 0) {
    }
    return 0;
}
