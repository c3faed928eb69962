/*
 * An independent OTR v3 peer for Jabberwock's interop tier: libotr 4.1 behind a line protocol
 * on stdin/stdout (fields separated by TAB, one command per line).
 *
 *   init <account> <max_message>   -> ok <fingerprint>   (max_message 0: no fragmentation)
 *   secret <peer> <text>           -> (the SMP answer agreed with <peer>)
 *   send <peer> <text>             -> what libotr sends
 *   recv <peer> <message>          -> what libotr sends back, and what it shows
 *   smp <peer>                     -> start SMP with the agreed answer
 *
 * Every command's output ends with a line "end". Output lines:
 *   out <peer> <message>     a message to deliver to <peer>
 *   shown <peer> <text>      text shown to the user
 *   event <name> <detail>    a libotr message or SMP event
 *
 * Policy: ALLOW_V3 | REQUIRE_ENCRYPTION | WHITESPACE_START_AKE | ERROR_START_AKE.
 * Build: cc harness.c -o harness -lotr -lgcrypt
 */
#include <gcrypt.h>
/* libotr's headers depend on proto.h coming first. */
#include <libotr/proto.h>
#include <libotr/context.h>
#include <libotr/instag.h>
#include <libotr/message.h>
#include <libotr/privkey.h>
#include <libotr/tlv.h>
#include <libotr/userstate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROTOCOL "xmpp"
#define MAX_PEERS 16

static OtrlUserState us;
static char account[256];
static int max_message;
static char secrets_peer[MAX_PEERS][256];
static char secrets_text[MAX_PEERS][256];
static int nsecrets;
static ConnContext *respond_ctx; /* SMP asked for our secret during the last call */

static char keyfile[64], instagfile[64];

/* Writes a field with \\, \n and \t escaped, so every record stays on one line. */
static void field(const char *s) {
    for (; *s; s++) {
        if (*s == '\\') fputs("\\\\", stdout);
        else if (*s == '\n') fputs("\\n", stdout);
        else if (*s == '\t') fputs("\\t", stdout);
        else putchar(*s);
    }
}

static void record(const char *kind, const char *a, const char *b) {
    fputs(kind, stdout);
    putchar('\t');
    field(a);
    putchar('\t');
    field(b);
    putchar('\n');
}

static const char *secret_for(const char *peer) {
    for (int i = 0; i < nsecrets; i++)
        if (strcmp(secrets_peer[i], peer) == 0) return secrets_text[i];
    return "";
}

static OtrlPolicy op_policy(void *opdata, ConnContext *context) {
    (void)opdata; (void)context;
    return OTRL_POLICY_ALLOW_V3 | OTRL_POLICY_REQUIRE_ENCRYPTION | OTRL_POLICY_WHITESPACE_START_AKE |
           OTRL_POLICY_ERROR_START_AKE;
}

static void op_create_privkey(void *opdata, const char *accountname, const char *protocol) {
    (void)opdata;
    otrl_privkey_generate(us, keyfile, accountname, protocol);
}

static int op_is_logged_in(void *opdata, const char *accountname, const char *protocol, const char *recipient) {
    (void)opdata; (void)accountname; (void)protocol; (void)recipient;
    return 1;
}

static void op_inject(void *opdata, const char *accountname, const char *protocol, const char *recipient,
                      const char *message) {
    (void)opdata; (void)accountname; (void)protocol;
    record("out", recipient, message);
}

static void op_update_context_list(void *opdata) { (void)opdata; }

static void op_new_fingerprint(void *opdata, OtrlUserState u, const char *accountname, const char *protocol,
                               const char *username, unsigned char fingerprint[20]) {
    (void)opdata; (void)u; (void)accountname; (void)protocol;
    char human[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
    otrl_privkey_hash_to_human(human, fingerprint);
    printf("event\tnew-fingerprint\t%s %s\n", username, human);
}

static void op_write_fingerprints(void *opdata) { (void)opdata; }

static void op_gone_secure(void *opdata, ConnContext *context) {
    (void)opdata;
    printf("event\tgone-secure\t%s\n", context->username);
}

static void op_gone_insecure(void *opdata, ConnContext *context) {
    (void)opdata;
    printf("event\tgone-insecure\t%s\n", context->username);
}

static void op_still_secure(void *opdata, ConnContext *context, int is_reply) {
    (void)opdata; (void)is_reply;
    printf("event\tstill-secure\t%s\n", context->username);
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
    (void)opdata; (void)question;
    switch (event) {
    case OTRL_SMPEVENT_ASK_FOR_SECRET:
    case OTRL_SMPEVENT_ASK_FOR_ANSWER:
        respond_ctx = context;
        printf("event\tsmp-asked\t%s\n", context->username);
        break;
    case OTRL_SMPEVENT_SUCCESS: printf("event\tsmp-success\t%s\n", context->username); break;
    case OTRL_SMPEVENT_FAILURE: printf("event\tsmp-failure\t%s\n", context->username); break;
    case OTRL_SMPEVENT_ABORT: printf("event\tsmp-abort\t%s\n", context->username); break;
    case OTRL_SMPEVENT_CHEATED:
    case OTRL_SMPEVENT_ERROR:
        printf("event\tsmp-error\t%s\n", context->username);
        otrl_message_abort_smp(us, NULL, NULL, context);
        break;
    default: printf("event\tsmp-progress\t%u\n", progress); break;
    }
}

static void op_handle_msg_event(void *opdata, OtrlMessageEvent event, ConnContext *context, const char *message,
                                gcry_error_t err) {
    (void)opdata; (void)err;
    const char *who = context ? context->username : "?";
    char name[32];
    snprintf(name, sizeof name, "msg-%d", (int)event);
    record("event", name, who);
    (void)message;
}

static void op_create_instag(void *opdata, const char *accountname, const char *protocol) {
    (void)opdata;
    otrl_instag_generate(us, instagfile, accountname, protocol);
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

int main(void) {
    OTRL_INIT;
    setup_ops();
    us = otrl_userstate_create();
    static char line[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        char *cmd = strtok(line, "\t");
        char *a = strtok(NULL, "\t");
        char *b = strtok(NULL, "");
        if (!cmd) continue;
        if (strcmp(cmd, "init") == 0 && a) {
            snprintf(account, sizeof account, "%s", a);
            max_message = b ? atoi(b) : 0;
            snprintf(keyfile, sizeof keyfile, "/tmp/jabberwock-otr-key-%d", (int)getpid());
            snprintf(instagfile, sizeof instagfile, "/tmp/jabberwock-otr-instag-%d", (int)getpid());
            otrl_privkey_generate(us, keyfile, account, PROTOCOL);
            otrl_instag_generate(us, instagfile, account, PROTOCOL);
            unlink(keyfile);
            unlink(instagfile);
            char human[OTRL_PRIVKEY_FPRINT_HUMAN_LEN];
            otrl_privkey_fingerprint(us, human, account, PROTOCOL);
            printf("ok\t%s\n", human);
        } else if (strcmp(cmd, "secret") == 0 && a && b && nsecrets < MAX_PEERS) {
            snprintf(secrets_peer[nsecrets], 256, "%s", a);
            snprintf(secrets_text[nsecrets], 256, "%s", b);
            nsecrets++;
        } else if (strcmp(cmd, "send") == 0 && a) {
            char *newmsg = NULL;
            gcry_error_t err = otrl_message_sending(us, &ops, NULL, account, PROTOCOL, a, OTRL_INSTAG_BEST,
                                                    b ? b : "", NULL, &newmsg, OTRL_FRAGMENT_SEND_ALL, NULL,
                                                    NULL, NULL);
            if (err) printf("event\tsend-error\t%s\n", gcry_strerror(err));
            otrl_message_free(newmsg);
        } else if (strcmp(cmd, "recv") == 0 && a && b) {
            char *newmsg = NULL;
            OtrlTLV *tlvs = NULL;
            int internal = otrl_message_receiving(us, &ops, NULL, account, PROTOCOL, a, b, &newmsg, &tlvs, NULL,
                                                  NULL, NULL);
            if (!internal) record("shown", a, newmsg ? newmsg : b);
            otrl_message_free(newmsg);
            otrl_tlv_free(tlvs);
            respond_if_asked();
        } else if (strcmp(cmd, "smp") == 0 && a) {
            ConnContext *ctx = best_context(a);
            if (ctx && ctx->msgstate == OTRL_MSGSTATE_ENCRYPTED) {
                const char *s = secret_for(a);
                otrl_message_initiate_smp(us, &ops, NULL, ctx, (const unsigned char *)s, strlen(s));
            } else {
                printf("event\tsmp-impossible\t%s\n", a);
            }
        }
        printf("end\n");
        fflush(stdout);
    }
    return 0;
}
