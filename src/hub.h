/*
 * hub.h - what hub.c (names, the cache layout) needs from download.c (HTTP).
 */
#ifndef GPTC_HUB_H
#define GPTC_HUB_H

#include <stdint.h>

#include "gptc.h"

/* One client of one Hub endpoint; requests reuse its connection. */
typedef struct {
    void *curl;     /* CURL * */
    char *endpoint; /* HF_ENDPOINT without a trailing '/' */
    char *token;    /* sent as "Authorization: Bearer" to the endpoint's origin only; NULL: none */
    long etag_timeout_s, download_timeout_s;
    int progress; /* draw a progress bar on stderr */
} hub_client;

/* What a HEAD request for one file of a repo says about it. */
typedef struct {
    long status;         /* the endpoint's final HTTP status */
    char commit[64];     /* X-Repo-Commit; "" when absent */
    char etag[160];      /* X-Linked-Etag, else ETag, without W/ and quotes; "" when absent */
    int64_t size;        /* X-Linked-Size, else Content-Length of a 200; -1 when unknown */
    char *location;      /* where to GET the content (malloc'ed) */
    char error_code[64]; /* X-Error-Code: RepoNotFound, EntryNotFound, GatedRepo, ... */
    char error_msg[256]; /* X-Error-Message */
} hub_meta;

gptc_status hub_client_init(hub_client *c, const char *endpoint, const char *token);
void hub_client_free(hub_client *c);

/*
 * HEAD `url`, following redirects within the endpoint's origin (a renamed
 * repo) but not to another origin (the CDN serving large files), whose
 * address becomes m->location. An HTTP error status is not a failure here:
 * it is returned in m->status for the caller to explain. Failure: the
 * endpoint cannot be reached (GPTC_ERR_IO).
 */
gptc_status hub_head(hub_client *c, const char *url, hub_meta *m);
void hub_meta_free(hub_meta *m);

/*
 * GETs `url` into `path`, resuming from the bytes `path` already holds with
 * a Range request (starting over if the server ignores it). `expect` is the
 * size the file must have in the end (-1: unknown); `label` names the file
 * in the progress bar and in messages.
 */
gptc_status hub_get(hub_client *c, const char *url, const char *path, int64_t expect,
                    const char *label);

#endif
