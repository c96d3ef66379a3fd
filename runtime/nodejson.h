/* nodejson.h: NOT PUBLIC. The conversion layer between Node.js's 'json' IPC
 * serialization (child_process with serialization: 'json', the default) and
 * weft's msgpack payloads. Pure functions over bytes: no I/O, no fds, no
 * loop. The transport that owns the IPC pipe (and the SCM_RIGHTS fds) calls
 * them.
 *
 * The wire is one JSON value per line: the UTF-8 of JSON.stringify(value),
 * then one '\n'. Three pieces:
 *   weft__linebuf_*        reassembles lines from arbitrary reads;
 *   weft__nodejson_decode  one line -> a classified message (user payload as
 *                          msgpack, or one of Node's internal NODE_* commands);
 *   weft__nodejson_encode  one msgpack value -> one line (optionally wrapped as
 *                          NODE_HANDLE), and weft__nodejson_control for the
 *                          replies the transport owes Node (ACK, NACK, ...).
 *
 * Value mapping (both ways):
 *   JSON object  <-> map with str keys     JSON array  <-> array
 *   JSON string  <-> str (WTF-8, below)    true/false  <-> bool
 *   JSON integer <-> int (written as an integer, in int64 range)
 *   other number <-> float64 (a fraction or exponent, or an integer outside
 *                    int64 such as Node's 1e20 "100000000000000000000";
 *                    float32 is sent as a real; NaN and +-Inf are sent as
 *                    null, like JSON.stringify)      null <-> nil
 *   {"type":"Buffer","data":[0..255,...]}  <-> bin (Node's Buffer.toJSON;
 *                    exactly those two keys, every element an integer 0..255;
 *                    anything else of that shape stays a map)
 * Strings are WTF-8 (generalized UTF-8): UTF-8, except that a lone surrogate
 * (a JS string may hold one; JSON.stringify writes it as "\ud800") is its
 * 3-byte form (U+D800 is ED A0 80); a lead surrogate directly followed by a
 * trail one is never written that way (the pair is one 4-byte character).
 * Decoding turns \uXXXX escapes into those bytes; encoding writes surrogate
 * bytes back as the same lowercase escapes, so a string goes from Node
 * through weft and back unchanged. Raw bytes in a line must be strict UTF-8.
 * Keys and strings may hold NUL (written "\u0000"). Duplicate keys: the last
 * value wins, at the first one's place (JSON.parse); weft never writes any.
 * Nesting: at most WEFT__NODEJSON_MAX_DEPTH (8192) nested arrays and maps in
 * the msgpack value (a Buffer form counts as a bin, not as two containers),
 * both ways, so whatever decode produces, encode accepts and vice versa.
 * Node 20's JSON.stringify stops at about 4185 (RangeError, default stack)
 * and its JSON.parse has no limit. Neither direction recurses in C: the
 * decoder and encoder keep an explicit stack (on the heap, bounded by the
 * limit), and a line nested past the limit is scanned to its end keeping no
 * frame, so a 100 MiB "[[[[..." line costs its own bytes and no C stack.
 *
 * What the decoder refuses: WEFT_EPROTO for a line that is not one JSON value
 * (invalid UTF-8, raw control characters, trailing bytes, a number that
 * overflows a double, which JSON.stringify never writes);
 * WEFT_EUNREPRESENTABLE for valid JSON nested past the limit. The transport
 * drops such a line alone and reports it on the user's port
 * (weft_port_on_error); the channel carries on (lines delimit themselves).
 *
 * Threads: every function is reentrant; a linebuf or a decoded message is
 * used by one thread at a time. Everything is allocated with weft__malloc.
 * Numbers are read and written with '.' whatever the C locale. */
#ifndef WEFT_NODEJSON_H
#define WEFT_NODEJSON_H

#include "weft_impl.h"

/* Nesting limit for the converted value (see above): about twice what Node's
 * JSON.stringify manages with its default stack. */
#define WEFT__NODEJSON_MAX_DEPTH 8192

/* Default maximum line length for weft__linebuf_init(lb, 0). Node has no
 * limit of its own; a Buffer of n bytes takes up to 4n + 30 bytes of JSON. */
#define WEFT__LINEBUF_DEFAULT_MAX ((size_t)64 << 20)

/* ---- line reassembly ------------------------------------------------------ */

/* weft__linebuf_t: bytes read from the pipe, cut into lines. Caller-embedded;
 * fields are private. Invariant: buf[start, len) is not yet returned,
 * buf[start, scan) holds no '\n', and no stored line (complete or not) is
 * longer than max bytes before its '\n'. */
typedef struct {
  char *buf;     /* weft__malloc'd, cap bytes (NULL while empty) */
  size_t cap;
  size_t len;    /* bytes stored */
  size_t start;  /* first byte not yet returned by next */
  size_t scan;   /* buf[start, scan) is known to hold no '\n' */
  size_t tail;   /* length of the unfinished last line in buf */
  size_t max;    /* longest line allowed, '\n' not counted */
  int err;       /* 0, or WEFT_EFRAMESIZE once a line went past max */
} weft__linebuf_t;

/* weft__linebuf_init: an empty line buffer accepting lines of at most
 * max_line bytes (not counting the '\n'); 0 means WEFT__LINEBUF_DEFAULT_MAX.
 * Allocates nothing. */
void weft__linebuf_init(weft__linebuf_t *lb, size_t max_line);

/* weft__linebuf_fini: frees the buffer. The linebuf may be initialised again. */
void weft__linebuf_fini(weft__linebuf_t *lb);

/* weft__linebuf_feed: appends n bytes read from the pipe (any split: inside a
 * line, inside a UTF-8 character, several lines at once). Invalidates the
 * lines returned so far. Before the buffer grows, the new bytes are checked:
 * if they would make a line longer than max, only the bytes up to the last
 * '\n' before that line are kept, and weft__linebuf_next reports
 * WEFT_EFRAMESIZE after returning the complete lines before it; the buffer
 * never holds more than max bytes of one line. Returns 0; WEFT_ENOMEM (nothing
 * was appended; the caller may retry with the same bytes); or WEFT_EFRAMESIZE
 * if that error was already reported by next (the stream is dead: the bytes
 * are dropped). Call next until it returns 0 before feeding again, or the
 * buffer holds every complete line fed meanwhile. */
int weft__linebuf_feed(weft__linebuf_t *lb, const char *p, size_t n);

/* weft__linebuf_next: the oldest complete line not yet returned. Returns 1
 * and sets *line (not NUL-terminated, may contain any byte except '\n') and
 * *len (without the '\n'; 0 for a blank line); *line stays valid until the
 * next feed or fini. Returns 0 if no complete line is stored, or
 * WEFT_EFRAMESIZE (after every complete line before it, and on every call
 * from then on) if a line went past max. */
int weft__linebuf_next(weft__linebuf_t *lb, const char **line, size_t *len);

/* weft__linebuf_rest: at EOF, the unfinished last line (bytes after the last
 * '\n'), once. Call after next returned 0. Returns true and sets *rest / *len,
 * or false if there is none (or the stream failed). */
bool weft__linebuf_rest(weft__linebuf_t *lb, const char **rest, size_t *len);

/* ---- decoding --------------------------------------------------------------- */

typedef enum {
  WEFT__NODEJSON_USER = 1,         /* a user message: msg is the value */
  WEFT__NODEJSON_NODE_HANDLE,      /* {"cmd":"NODE_HANDLE","type":T,"msg":V,...}:
                                    * a handle travels with it; msg is V (nil if
                                    * absent), handle_type is T */
  WEFT__NODEJSON_NODE_HANDLE_ACK,  /* {"cmd":"NODE_HANDLE_ACK"}: msg is NULL */
  WEFT__NODEJSON_NODE_HANDLE_NACK, /* {"cmd":"NODE_HANDLE_NACK"}: msg is NULL */
  WEFT__NODEJSON_NODE_OTHER        /* any other NODE_* command (NODE_SOCKET_*,
                                    * NODE_CLUSTER, ...): msg is the whole
                                    * object, so the transport can answer */
} weft__nodejson_kind_t;

/* weft__nodejson_in_t: one decoded line. The strings and msg are the
 * caller's; weft__nodejson_in_fini frees whatever is still in it, so a caller
 * that keeps msg sets the field to NULL first. */
typedef struct {
  int kind;          /* weft__nodejson_kind_t */
  weft_msg_t *msg;   /* USER, NODE_HANDLE, NODE_OTHER; else NULL. Payload only
                      * (empty transfer list) */
  char *cmd;         /* the "cmd" string of an internal message; NULL for USER */
  char *handle_type; /* NODE_HANDLE: "type" ("net.Socket", "net.Server",
                      * "net.Native", "dgram.Socket", ...); else NULL */
  char *key;         /* internal messages: the "key" member when it is a string
                      * (net.Socket handles, NODE_SOCKET_NOTIFY_CLOSE,
                      * NODE_SOCKET_GET_COUNT); else NULL */
} weft__nodejson_in_t;

/* weft__nodejson_decode: parses one line (without its '\n'; a trailing '\r'
 * or other JSON whitespace is allowed) strictly: one JSON value, valid UTF-8,
 * nothing after it. Duplicate object keys are allowed, the last one wins (as
 * in JSON.parse). The line is internal, as Node decides it, when it is an
 * object whose "cmd" is a string starting with "NODE_" and longer than 5
 * bytes; then cmd (and handle_type, key) must not contain "\u0000".
 * Returns 0 and fills *out (zeroed first); or, with *out zeroed and nothing
 * allocated: WEFT_EPROTO (not JSON, blank line, invalid UTF-8, deeper than
 * WEFT__NODEJSON_MAX_DEPTH, a NODE_HANDLE without a string "type", a limit
 * listed at the top of this file), WEFT_ENOMEM, WEFT_EMSGSIZE (a payload over
 * 4 GiB), WEFT_EINVAL (NULL out, or NULL line with len > 0). */
int weft__nodejson_decode(const char *line, size_t len, weft__nodejson_in_t *out);

/* weft__nodejson_in_fini: frees in's msg and strings and zeroes it. */
void weft__nodejson_in_fini(weft__nodejson_in_t *in);

/* ---- encoding ----------------------------------------------------------------- */

/* weft__nodejson_encode: the line for one msgpack value (payload, len bytes:
 * exactly one value). With handle_type != NULL the value is wrapped as
 * {"cmd":"NODE_HANDLE","type":handle_type,"msg":value}, for sending with a
 * handle (uv_write2). On success *out is a weft__malloc'd block the caller
 * frees with weft__free, holding *outlen bytes: one compact JSON value
 * followed by a single '\n' (never a blank line, never a raw '\n' inside),
 * plus a NUL after them that *outlen does not count. Map entries are written
 * as they are, duplicates included. Returns 0; WEFT_EPROTO (not exactly one
 * msgpack value); WEFT_EUNREPRESENTABLE (nested deeper than
 * WEFT__NODEJSON_MAX_DEPTH); WEFT_ETYPE (a value JSON cannot carry: an ext, a
 * uint above INT64_MAX, a map key that is not a str, a str that is not
 * WTF-8); WEFT_EINVAL (NULL arguments, handle_type not valid UTF-8);
 * WEFT_ENOMEM. On error *out is untouched.
 * The value is sent as is: a map whose "cmd" is "NODE_..." reaches Node as an
 * internal message. A transport sending user payloads refuses those first
 * with weft__nodejson_is_internal. */
int weft__nodejson_encode(const void *payload, size_t len, const char *handle_type,
                          char **out, size_t *outlen);

/* weft__nodejson_is_internal: true if the msgpack value in payload would
 * reach Node as an internal message once encoded: a map whose last "cmd" key
 * (the one that survives encoding) holds a str starting with "NODE_" and
 * longer than 5 bytes. False for anything else, invalid msgpack included. */
bool weft__nodejson_is_internal(const void *payload, size_t len);

/* weft__nodejson_control: the line for one of the replies the transport owes
 * Node: {"cmd":cmd}, plus "key":key when key is not NULL, plus "count":count
 * when count >= 0, in that order:
 *   ("NODE_HANDLE_ACK", NULL, -1)      {"cmd":"NODE_HANDLE_ACK"}
 *   ("NODE_HANDLE_NACK", NULL, -1)     {"cmd":"NODE_HANDLE_NACK"}
 *   ("NODE_SOCKET_ALL_CLOSED", K, -1)  {"cmd":"NODE_SOCKET_ALL_CLOSED","key":K}
 *   ("NODE_SOCKET_COUNT", K, n)        {"cmd":"NODE_SOCKET_COUNT","key":K,"count":n}
 * Output as for weft__nodejson_encode. Returns 0, WEFT_EINVAL (cmd not an
 * internal command name, cmd or key not valid UTF-8, NULL out), WEFT_ENOMEM. */
int weft__nodejson_control(const char *cmd, const char *key, int64_t count, char **out,
                           size_t *outlen);

#endif /* WEFT_NODEJSON_H */
