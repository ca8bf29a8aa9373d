// Declarations shared by gnutls.go and gnutls.c (build tag gnutls).
#include <stdint.h>
#include <sys/types.h>
#include <gnutls/gnutls.h>

extern ssize_t camountTLSPSKPull(uintptr_t h, void *buf, size_t n);
extern ssize_t camountTLSPSKPush(uintptr_t h, void *buf, size_t n);
int camount_psk_session(gnutls_session_t *s, gnutls_psk_server_credentials_t cred, uintptr_t h);
