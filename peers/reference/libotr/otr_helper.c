/*
 * libotr behind a line protocol, for Jabberwock's libotr adapter (adapter.py next to this file).
 * One process per engine (one OtrlUserState, one account). Written for this adapter; the
 * interop harness peers/reference/otr/harness.c showed how libotr is driven.
 *
 * Requests, one per line, fields separated by one space, text fields hex-encoded ("-" = empty):
 *   init   SEED NOW ACCOUNT POLICY MAX     new DSA key and instance tag (from SEED)
 *   load   ACCOUNT POLICY MAX KEYTEXT INSTAGTEXT   a stolen/saved identity
 *   secret PEER TEXT                       the SMP answer agreed with PEER (bare JID)
 *   send   SEED NOW PEER TEXT              otrl_message_sending to the best instance
 *   recv   SEED NOW PEER TEXT              otrl_message_receiving
 *   smp    SEED NOW PEER                   otrl_message_initiate_smp on the best instance
 *   status PEER                            the best instance's state
 *   me                                     our fingerprint, public key, instance tag, key files
 *   forget                                 drop every context (sessions, fingerprints)
 *   fork                                   fork: the child serves the two descriptors that came
 *                                          over the control socket (its number is argv[1];
 *                                          SCM_RIGHTS): requests/answers, control
 *   forge  SEED NOW PEER TEXT              a Data Message this side would accept from PEER
 * Answers: lines "KIND FIELD...", then "end".
 *
 * Randomness and time: libgcrypt is switched to its "system" RNG, which reads getentropy() for
 * every request, with the jitter and RDRAND sources disabled; getentropy() and time() are
 * defined here (the executable's definitions take precedence over libc's for libgcrypt and
 * libotr), fed by the request's SEED (SHA-256 in counter mode, as the Python kit does) and NOW.
 */
#define _GNU_SOURCE
#include <gcrypt.h>
#include <libotr/proto.h>
#include <libotr/b64.h>
#include <libotr/context.h>
#include <libotr/context_priv.h>
#include <libotr/dh.h>
#include <libotr/instag.h>
#include <libotr/message.h>
#include <libotr/privkey.h>
#include <libotr/tlv.h>
#include <libotr/userstate.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL "xmpp"
#define MAX_PEERS 64

/* --- seeded entropy and simulated time ------------------------------------------------------ */

static unsigned char seed[32];
static unsigned long long seed_counter;
static unsigned char pool[32];
static size_t pool_left;
static long long now_ms = 1767225600000LL;

static void set_seed(const unsigned char *s) {
    memcpy(seed, s, 32);
    seed_counter = 0;
    pool_left = 0;
}

int getentropy(void *buffer, size_t length) {
    unsigned char *out = buffer;
    while (length) {
        if (!pool_left) {
            unsigned char in[40];
            memcpy(in, seed, 32);
            for (int i = 0; i < 8; i++) in[32 + i] = (unsigned char)(seed_counter >> (56 - 8 * i));
            seed_counter++;
            gcry_md_hash_buffer(GCRY_MD_SHA256, pool, in, sizeof in);
            pool_left = 32;
        }
        size_t n = length < pool_left ? length : pool_left;
        memcpy(out, pool + (32 - pool_left), n);
        pool_left -= n;
        out += n;
        length -= n;
    }
    return 0;
}

/* libgcrypt's nonce generator mixes in the process id (and time): a fixed one keeps it
 * reproducible (nonces serve its prime tests; every secret comes from getentropy above). */
pid_t getpid(void) { return 4242; }

time_t time(time_t *t) {
    time_t v = (time_t)(now_ms / 1000);
    if (t) *t = v;
    return v;
}

/* --- hex fields ----------------------------------------------------------------------------- */

static void put_hex(const unsigned char *b, size_t n) {
    static const char digits[] = "0123456789abcdef";
    if (n == 0) {
        putchar('-');
        return;
    }
    for (size_t i = 0; i < n; i++) {
        putchar(digits[b[i] >> 4]);
        putchar(digits[b[i] & 15]);
    }
}

static void put_str(const char *s) { put_hex((const unsigned char *)(s ? s : ""), s ? strlen(s) : 0); }

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes a hex field in place into a NUL-terminated string; returns its length or -1. */
static long unhex(char *f) {
    if (!f) return -1;
    if (strcmp(f, "-") == 0) {
        f[0] = 0;
        return 0;
    }
    size_t n = strlen(f);
    if (n % 2) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = nibble(f[2 * i]), lo = nibble(f[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        f[i] = (char)(hi << 4 | lo);
    }
    f[n / 2] = 0;
    return (long)(n / 2);
}

/* --- libotr glue ---------------------------------------------------------------------------- */

static OtrlUserState us;
static char account[512];
static OtrlPolicy policy = OTRL_POLICY_ALLOW_V3 | OTRL_POLICY_REQUIRE_ENCRYPTION |
                           OTRL_POLICY_WHITESPACE_START_AKE | OTRL_POLICY_ERROR_START_AKE;
static int max_message;
static char *secret_peer[MAX_PEERS], *secret_text[MAX_PEERS];
static int nsecrets;
static ConnContext *respond_ctx;
static char *keytext, *instagtext;
static size_t keytext_len, instagtext_len;

static const char *secret_for(const char *peer) {
    for (int i = 0; i < nsecrets; i++)
        if (strcmp(secret_peer[i], peer) == 0) return secret_text[i];
    return "";
}

static void line2(const char *kind, const char *a) {
    fputs(kind, stdout);
    putchar(' ');
    put_str(a);
    putchar('\n');
}

static OtrlPolicy op_policy(void *opdata, ConnContext *context) {
    (void)opdata; (void)context;
    return policy;
}

static void op_create_privkey(void *opdata, const char *accountname, const char *protocol) {
    (void)opdata; (void)accountname; (void)protocol;
    /* The key exists from init/load; libotr asks only when it has none. */
    printf("ev no-key -\n");
}

static int op_is_logged_in(void *opdata, const char *a, const char *p, const char *r) {
    (void)opdata; (void)a; (void)p; (void)r;
    return 1;
}

static void op_inject(void *opdata, const char *a, const char *p, const char *recipient, const char *message) {
    (void)opdata; (void)a; (void)p; (void)recipient;
    line2("out", message);
}

static void op_update_context_list(void *opdata) { (void)opdata; }

static void op_new_fingerprint(void *opdata, OtrlUserState u, const char *a, const char *p, const char *username,
                               unsigned char fingerprint[20]) {
    (void)opdata; (void)u; (void)a; (void)p; (void)username;
    printf("ev new-fingerprint ");
    put_hex(fingerprint, 20);
    putchar('\n');
}

static void op_write_fingerprints(void *opdata) { (void)opdata; }

static void op_gone_secure(void *opdata, ConnContext *context) {
    (void)opdata;
    /* The adapter keeps every message typed before the session and sends them in order once
     * private (libotr would resend only the last one, and not at all after a fragmented AKE). */
    context->context_priv->may_retransmit = 0;
    if (context->m_context) context->m_context->context_priv->may_retransmit = 0;
    printf("ev gone-secure %u ", context->their_instance);
    if (context->active_fingerprint && context->active_fingerprint->fingerprint)
        put_hex(context->active_fingerprint->fingerprint, 20);
    else
        putchar('-');
    putchar(' ');
    put_hex(context->sessionid, context->sessionid_len);
    putchar('\n');
}

static void op_gone_insecure(void *opdata, ConnContext *context) {
    (void)opdata;
    printf("ev gone-insecure %u\n", context->their_instance);
}

static void op_still_secure(void *opdata, ConnContext *context, int is_reply) {
    (void)opdata; (void)is_reply;
    printf("ev still-secure %u ", context->their_instance);
    if (context->active_fingerprint && context->active_fingerprint->fingerprint)
        put_hex(context->active_fingerprint->fingerprint, 20);
    else
        putchar('-');
    putchar(' ');
    put_hex(context->sessionid, context->sessionid_len);
    putchar('\n');
}

static int op_max_message_size(void *opdata, ConnContext *context) {
    (void)opdata; (void)context;
    return max_message;
}

static const char *op_error_message(void *opdata, ConnContext *context, OtrlErrorCode code) {
    (void)opdata; (void)context;
    switch (code) {
    case OTRL_ERRCODE_MSG_NOT_IN_PRIVATE: return "You sent encrypted data to someone not in private.";
    case OTRL_ERRCODE_MSG_UNREADABLE: return "You sent an unreadable encrypted message.";
    case OTRL_ERRCODE_MSG_MALFORMED: return "You sent a malformed message.";
    default: return "An encryption error occurred.";
    }
}

static void op_error_message_free(void *opdata, const char *msg) { (void)opdata; (void)msg; }

static const char *op_resent_prefix(void *opdata, ConnContext *context) {
    (void)opdata; (void)context;
    return "";
}

static void op_resent_prefix_free(void *opdata, const char *prefix) { (void)opdata; (void)prefix; }

static void op_handle_smp_event(void *opdata, OtrlSMPEvent event, ConnContext *context, unsigned short progress,
                                char *question) {
    (void)opdata; (void)question; (void)progress;
    const char *name = "smp-other";
    switch (event) {
    case OTRL_SMPEVENT_ASK_FOR_SECRET:
    case OTRL_SMPEVENT_ASK_FOR_ANSWER: respond_ctx = context; name = "smp-asked"; break;
    case OTRL_SMPEVENT_SUCCESS: name = "smp-success"; break;
    case OTRL_SMPEVENT_FAILURE: name = "smp-failure"; break;
    case OTRL_SMPEVENT_ABORT: name = "smp-abort"; break;
    case OTRL_SMPEVENT_CHEATED: name = "smp-cheated"; break;
    case OTRL_SMPEVENT_ERROR: name = "smp-error"; break;
    case OTRL_SMPEVENT_IN_PROGRESS: name = "smp-progress"; break;
    default: break;
    }
    printf("ev %s %u ", name, context->their_instance);
    if (context->active_fingerprint && context->active_fingerprint->fingerprint)
        put_hex(context->active_fingerprint->fingerprint, 20);
    else
        putchar('-');
    putchar('\n');
    if (event == OTRL_SMPEVENT_SUCCESS && context->active_fingerprint)
        otrl_context_set_trust(context->active_fingerprint, "smp");
    if (event == OTRL_SMPEVENT_FAILURE && context->active_fingerprint)
        otrl_context_set_trust(context->active_fingerprint, "");
    if (event == OTRL_SMPEVENT_CHEATED || event == OTRL_SMPEVENT_ERROR)
        otrl_message_abort_smp(us, NULL, NULL, context);
}

static void op_handle_msg_event(void *opdata, OtrlMessageEvent event, ConnContext *context, const char *message,
                                gcry_error_t err) {
    (void)opdata;
    printf("ev msg-%d %u ", (int)event, context ? context->their_instance : 0);
    put_str(message);
    printf(" %u\n", (unsigned)gcry_err_code(err));
}

static void op_create_instag(void *opdata, const char *accountname, const char *protocol) {
    (void)opdata; (void)accountname; (void)protocol;
    printf("ev no-instag -\n");
}

static OtrlMessageAppOps ops;

static void setup_ops(void) {
    memset(&ops, 0, sizeof ops);
    ops.policy = op_policy;
    ops.create_privkey = op_create_privkey;
    ops.is_logged_in = op_is_logged_in;
    ops.inject_message = op_inject;
    ops.update_context_list = op_update_context_list;
    ops.new_fingerprint = op_new_fingerprint;
    ops.write_fingerprints = op_write_fingerprints;
    ops.gone_secure = op_gone_secure;
    ops.gone_insecure = op_gone_insecure;
    ops.still_secure = op_still_secure;
    ops.max_message_size = op_max_message_size;
    ops.otr_error_message = op_error_message;
    ops.otr_error_message_free = op_error_message_free;
    ops.resent_msg_prefix = op_resent_prefix;
    ops.resent_msg_prefix_free = op_resent_prefix_free;
    ops.handle_smp_event = op_handle_smp_event;
    ops.handle_msg_event = op_handle_msg_event;
    ops.create_instag = op_create_instag;
}

static ConnContext *best_context(const char *peer) {
    return otrl_context_find(us, peer, account, PROTOCOL, OTRL_INSTAG_BEST, 0, NULL, NULL, NULL);
}

static void respond_if_asked(void) {
    if (respond_ctx) {
        ConnContext *ctx = respond_ctx;
        respond_ctx = NULL;
        const char *s = secret_for(ctx->username);
        otrl_message_respond_smp(us, &ops, NULL, ctx, (const unsigned char *)s, strlen(s));
    }
}

/* Reads a whole FILE* into a malloc'd buffer. */
static char *slurp(FILE *f, size_t *len) {
    fflush(f);
    rewind(f);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* A real (temporary) file holding `text`: libotr fstat()s what it reads. */
static FILE *file_of(const char *text, size_t len) {
    FILE *f = tmpfile();
    if (!f) return NULL;
    if (fwrite(text, 1, len, f) != len) {
        fclose(f);
        return NULL;
    }
    rewind(f);
    return f;
}

static int load_identity(const char *key, size_t keylen, const char *instag, size_t instaglen) {
    FILE *f = file_of(key, keylen);
    if (!f) return -1;
    gcry_error_t e = otrl_privkey_read_FILEp(us, f);
    fclose(f);
    if (e) return -1;
    f = file_of(instag, instaglen);
    if (!f) return -1;
    e = otrl_instag_read_FILEp(us, f);
    fclose(f);
    if (e) return -1;
    free(keytext);
    free(instagtext);
    keytext = malloc(keylen + 1);
    memcpy(keytext, key, keylen);
    keytext[keylen] = 0;
    keytext_len = keylen;
    instagtext = malloc(instaglen + 1);
    memcpy(instagtext, instag, instaglen);
    instagtext[instaglen] = 0;
    instagtext_len = instaglen;
    return 0;
}

/* --- classifying an unreadable Data Message (for the error's reason) ---------------------- */

static unsigned int be32(const unsigned char *p) {
    return (unsigned int)p[0] << 24 | (unsigned int)p[1] << 16 | (unsigned int)p[2] << 8 | p[3];
}

/* Why libotr refused a Data Message it could not read: one of unknown-keyid, bad-mac,
 * replayed-counter, malformed, no-session (read from the header and the context's keys; the
 * MAC is checked with libgcrypt's HMAC-SHA1 and the key libotr holds). */
static const char *why_unreadable(const char *peer, const char *msg) {
    const char *start = strstr(msg, "?OTR:");
    if (!start) return "fragment";
    unsigned char *buf = NULL;
    size_t len = 0;
    if (otrl_base64_otr_decode(start, &buf, &len) || len < 11 + 8 + 4) {
        free(buf);
        return "malformed";
    }
    const char *why = "malformed";
    size_t pos = 3;
    unsigned int sender_tag = be32(buf + pos);
    pos += 8;
    pos += 1; /* flags */
    unsigned int sender_keyid = be32(buf + pos), recipient_keyid = be32(buf + pos + 4);
    pos += 8;
    if (pos + 4 > len) goto done;
    size_t ylen = be32(buf + pos);
    pos += 4;
    if (ylen > len - pos) goto done;
    pos += ylen;
    if (pos + 8 + 4 > len) goto done;
    const unsigned char *ctr = buf + pos;
    pos += 8;
    size_t elen = be32(buf + pos);
    pos += 4;
    if (elen > len - pos) goto done;
    pos += elen;
    if (pos + 20 > len) goto done;
    size_t authlen = pos;
    const unsigned char *mac = buf + pos;
    ConnContext *ctx = otrl_context_find(us, peer, account, PROTOCOL, sender_tag, 0, NULL, NULL, NULL);
    if (!ctx || ctx->msgstate != OTRL_MSGSTATE_ENCRYPTED) {
        why = "no-session";
        goto done;
    }
    ConnContextPriv *p = ctx->context_priv;
    int i = -1, j = -1;
    if (recipient_keyid != 0 && recipient_keyid == p->our_keyid) i = 0;
    else if (recipient_keyid != 0 && recipient_keyid == p->our_keyid - 1) i = 1;
    if (sender_keyid != 0 && sender_keyid == p->their_keyid) j = 0;
    else if (sender_keyid != 0 && sender_keyid == p->their_keyid - 1) j = 1;
    if (i < 0 || j < 0 || (j == 1 && p->their_old_y == NULL)) {
        why = "unknown-keyid";
        goto done;
    }
    DH_sesskeys *sess = &p->sesskeys[i][j];
    unsigned char computed[20];
    gcry_md_hd_t h;
    if (gcry_md_open(&h, GCRY_MD_SHA1, GCRY_MD_FLAG_HMAC) == 0) {
        gcry_md_setkey(h, sess->rcvmackey, 20);
        gcry_md_write(h, buf, authlen);
        memcpy(computed, gcry_md_read(h, GCRY_MD_SHA1), 20);
        gcry_md_close(h);
        if (memcmp(computed, mac, 20) != 0) {
            why = "bad-mac";
            goto done;
        }
    }
    unsigned char full[16] = {0};
    memcpy(full, ctr, 8);
    if (getenv("OTR_HELPER_DEBUG")) fprintf(stderr, "why: i=%d j=%d ctr=%02x%02x rcv=%02x%02x\n", i, j, ctr[6], ctr[7], sess->rcvctr[6], sess->rcvctr[7]);
    if (otrl_dh_cmpctr(full, sess->rcvctr) <= 0) why = "replayed-counter";
done:
    free(buf);
    return why;
}

/* --- forging (deniability) ------------------------------------------------------------------ */

/* In a forked copy: turn the receiving keys of the current key pair (our_keyid, their_keyid)
 * into sending ones, so libotr's own otrl_proto_create_data writes the message the peer could
 * have sent with them (OTR's MAC keys are shared: either side can make the other's messages). */
static char *forge_in_copy(ConnContext *ctx, const char *text) {
    ConnContextPriv *p = ctx->context_priv;
    DH_sesskeys cur = p->sesskeys[0][0];
    DH_sesskeys *s = &p->sesskeys[1][0];
    s->sendenc = cur.rcvenc;
    s->sendmac = cur.rcvmac;
    memcpy(s->sendmackey, cur.rcvmackey, 20);
    memcpy(s->sendctr, cur.rcvctr, 16);
    s->sendmacused = 0;
    /* create_data writes (our_keyid - 1, their_keyid) as (sender, recipient) keyids and
     * our_dh_key.pub as the next key: make them the peer's current keyid, ours, and the peer's
     * current public key. */
    unsigned int their = p->their_keyid, ours = p->our_keyid;
    p->our_keyid = their + 1;
    p->their_keyid = ours;
    p->our_dh_key.pub = p->their_y;
    p->numsavedkeys = 0;
    otrl_instag_t a = ctx->our_instance;
    ctx->our_instance = ctx->their_instance;
    ctx->their_instance = a;
    char *out = NULL;
    if (otrl_proto_create_data(&out, ctx, text, NULL, 0, NULL)) return NULL;
    return out;
}

/* --- fork ------------------------------------------------------------------------------------ */

static int recv_fds(int sock, int *fds, int n) {
    char byte;
    struct iovec iov = {&byte, 1};
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    if (recvmsg(sock, &msg, 0) <= 0) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int) * n)) return -1;
    memcpy(fds, CMSG_DATA(c), sizeof(int) * n);
    return 0;
}

/* --- the loop --------------------------------------------------------------------------------- */

static int seeded(char *s, char *now) {
    if (!s || !now || unhex(s) != 32) return -1;
    set_seed((unsigned char *)s);
    now_ms = atoll(now);
    return 0;
}

int main(int argc, char **argv) {
    int ctrl_fd = argc > 1 ? atoi(argv[1]) : 3;
    /* Before libgcrypt initialises: the system RNG (no pool of its own), no jitter or RDRAND. */
    gcry_control(GCRYCTL_SET_PREFERRED_RNG_TYPE, GCRY_RNG_TYPE_SYSTEM);
    gcry_control(GCRYCTL_DISABLE_HWF, "intel-rdrand", NULL);
    gcry_control(GCRYCTL_DISABLE_HWF, "intel-rdtsc", NULL);
    OTRL_INIT;
    if (argc > 1 && strcmp(argv[1], "--gcrypt-version") == 0) {
        printf("%s\n", gcry_check_version(NULL));
        return 0;
    }
    setup_ops();
    signal(SIGCHLD, SIG_IGN);
    us = otrl_userstate_create();
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        char *f[8] = {0};
        int nf = 0;
        for (char *save = NULL, *t = strtok_r(line, " ", &save); t && nf < 8; t = strtok_r(NULL, " ", &save))
            f[nf++] = t;
        const char *cmd = nf ? f[0] : "";
        unsigned int rng_type = 0;
        gcry_control(GCRYCTL_GET_CURRENT_RNG_TYPE, &rng_type);
        if (rng_type != GCRY_RNG_TYPE_SYSTEM) printf("ev rng-not-system %u\n", rng_type);
        if (strcmp(cmd, "init") == 0 && nf == 6 && seeded(f[1], f[2]) == 0 && unhex(f[3]) > 0) {
            snprintf(account, sizeof account, "%s", f[3]);
            policy = (OtrlPolicy)atoi(f[4]);
            max_message = atoi(f[5]);
            FILE *k = tmpfile(), *i = tmpfile();
            gcry_error_t e1 = otrl_privkey_generate_FILEp(us, k, account, PROTOCOL);
            gcry_error_t e2 = otrl_instag_generate_FILEp(us, i, account, PROTOCOL);
            if (e1 || e2) {
                printf("fail %s\n", gcry_strerror(e1 ? e1 : e2));
            } else {
                keytext = slurp(k, &keytext_len);
                instagtext = slurp(i, &instagtext_len);
                printf("ok\n");
            }
            fclose(k);
            fclose(i);
        } else if (strcmp(cmd, "load") == 0 && nf == 6 && unhex(f[1]) > 0) {
            snprintf(account, sizeof account, "%s", f[1]);
            policy = (OtrlPolicy)atoi(f[2]);
            max_message = atoi(f[3]);
            long kl = unhex(f[4]), il = unhex(f[5]);
            if (kl <= 0 || il <= 0 || load_identity(f[4], (size_t)kl, f[5], (size_t)il))
                printf("fail bad-state\n");
            else
                printf("ok\n");
        } else if (strcmp(cmd, "secret") == 0 && nf == 3 && unhex(f[1]) > 0 && unhex(f[2]) >= 0) {
            int slot = -1;
            for (int s = 0; s < nsecrets; s++)
                if (strcmp(secret_peer[s], f[1]) == 0) slot = s;
            if (slot < 0 && nsecrets < MAX_PEERS) {
                slot = nsecrets++;
                secret_peer[slot] = strdup(f[1]);
                secret_text[slot] = NULL;
            }
            if (slot >= 0) {
                free(secret_text[slot]);
                secret_text[slot] = strdup(f[2]);
            }
        } else if (strcmp(cmd, "send") == 0 && nf == 5 && seeded(f[1], f[2]) == 0 && unhex(f[3]) > 0 &&
                   unhex(f[4]) >= 0) {
            char *newmsg = NULL;
            gcry_error_t err = otrl_message_sending(us, &ops, NULL, account, PROTOCOL, f[3], OTRL_INSTAG_BEST, f[4],
                                                    NULL, &newmsg, OTRL_FRAGMENT_SEND_ALL, NULL, NULL, NULL);
            if (err) printf("err %s\n", gcry_strerror(err));
            if (newmsg) line2("newmsg", newmsg);
            otrl_message_free(newmsg);
        } else if (strcmp(cmd, "recv") == 0 && nf == 5 && seeded(f[1], f[2]) == 0 && unhex(f[3]) > 0 &&
                   unhex(f[4]) >= 0) {
            char *newmsg = NULL;
            OtrlTLV *tlvs = NULL;
            int internal = otrl_message_receiving(us, &ops, NULL, account, PROTOCOL, f[3], f[4], &newmsg, &tlvs,
                                                  NULL, NULL, NULL);
            for (OtrlTLV *t = tlvs; t; t = t->next) printf("tlv %u\n", t->type);
            if (!internal) line2("shown", newmsg ? newmsg : f[4]);
            printf("why %s\n", why_unreadable(f[3], f[4]));
            otrl_message_free(newmsg);
            otrl_tlv_free(tlvs);
            respond_if_asked();
        } else if (strcmp(cmd, "smp") == 0 && nf == 4 && seeded(f[1], f[2]) == 0 && unhex(f[3]) > 0) {
            ConnContext *ctx = best_context(f[3]);
            if (ctx && ctx->msgstate == OTRL_MSGSTATE_ENCRYPTED) {
                const char *s = secret_for(f[3]);
                otrl_message_initiate_smp(us, &ops, NULL, ctx, (const unsigned char *)s, strlen(s));
            } else {
                printf("ev smp-impossible -\n");
            }
        } else if (strcmp(cmd, "status") == 0 && nf == 2 && unhex(f[1]) > 0) {
            /* Every instance of the peer: tag, message state, fingerprint, trust. */
            ConnContext *m = otrl_context_find(us, f[1], account, PROTOCOL, OTRL_INSTAG_MASTER, 0, NULL, NULL, NULL);
            ConnContext *best = best_context(f[1]);
            for (ConnContext *c = us->context_root; c; c = c->next) {
                if (!m || c->m_context != m || c == m) continue;
                printf("ctx %u %d %d ", c->their_instance, (int)c->msgstate, c == best);
                if (c->active_fingerprint && c->active_fingerprint->fingerprint)
                    put_hex(c->active_fingerprint->fingerprint, 20);
                else
                    putchar('-');
                putchar(' ');
                put_str(c->active_fingerprint ? c->active_fingerprint->trust : NULL);
                putchar('\n');
            }
            if (m)
                for (Fingerprint *fp = m->fingerprint_root.next; fp; fp = fp->next) {
                    printf("fp ");
                    put_hex(fp->fingerprint, 20);
                    putchar(' ');
                    put_str(fp->trust);
                    putchar('\n');
                }
        } else if (strcmp(cmd, "me") == 0) {
            unsigned char fp[20];
            OtrlPrivKey *k = otrl_privkey_find(us, account, PROTOCOL);
            OtrlInsTag *t = otrl_instag_find(us, account, PROTOCOL);
            if (k && otrl_privkey_fingerprint_raw(us, fp, account, PROTOCOL)) {
                printf("me ");
                put_hex(fp, 20);
                printf(" %04x", k->pubkey_type);
                put_hex(k->pubkey_data, k->pubkey_datalen);
                printf(" %u ", t ? t->instag : 0);
                put_hex((unsigned char *)keytext, keytext_len);
                putchar(' ');
                put_hex((unsigned char *)instagtext, instagtext_len);
                putchar('\n');
            }
        } else if (strcmp(cmd, "forget") == 0) {
            otrl_context_forget_all(us);
        } else if (strcmp(cmd, "fork") == 0) {
            int fds[2];
            if (recv_fds(ctrl_fd, fds, 2) != 0) {
                printf("fail no-descriptors\n");
            } else {
                fflush(stdout);
                pid_t pid = fork();
                if (pid == 0) {
                    /* The copy: serve the new descriptors. */
                    dup2(fds[0], 0);
                    dup2(fds[0], 1);
                    dup2(fds[1], ctrl_fd);
                    close(fds[0]);
                    close(fds[1]);
                    clearerr(stdin);
                    printf("forked\nend\n");
                    fflush(stdout);
                    continue;
                }
                close(fds[0]);
                close(fds[1]);
                printf(pid > 0 ? "ok\n" : "fail fork\n");
            }
        } else if (strcmp(cmd, "forge") == 0 && nf == 5 && seeded(f[1], f[2]) == 0 && unhex(f[3]) > 0 &&
                   unhex(f[4]) >= 0) {
            ConnContext *ctx = best_context(f[3]);
            if (!ctx || ctx->msgstate != OTRL_MSGSTATE_ENCRYPTED) {
                printf("none\n");
            } else {
                int pipefd[2];
                if (pipe(pipefd) == 0) {
                    fflush(stdout);
                    pid_t pid = fork();
                    if (pid == 0) {
                        close(pipefd[0]);
                        char *m = forge_in_copy(ctx, f[4]);
                        if (m) {
                            size_t l = strlen(m);
                            if (write(pipefd[1], m, l) != (ssize_t)l) _exit(1);
                        }
                        _exit(0);
                    }
                    close(pipefd[1]);
                    FILE *r = fdopen(pipefd[0], "r");
                    size_t l = 0;
                    char *m = slurp(r, &l);
                    fclose(r);
                    if (l) line2("forged", m);
                    else printf("none\n");
                    free(m);
                }
            }
        } else {
            printf("fail bad-request\n");
        }
        printf("end\n");
        fflush(stdout);
    }
    return 0;
}
