# camount — see README.md. `make demo` runs the main job on a generated example,
# `make test` runs every test (installing what they need first).
GO      ?= go
BIN     ?= bin/camount
PREFIX  ?= /usr/local
FUZZTIME ?= 8s
# nbd --tls-psk links GnuTLS through cgo (package tlspsk) when its headers
# are installed (libgnutls28-dev: scripts/deps.sh installs it); without
# them camount builds without TLS-PSK. Expanded as each command runs, so
# after deps; exported, so go test's own builds (integration) get it too.
ENV_GOFLAGS := $(GOFLAGS)
GNUTLS_TAG = $(shell pkg-config --exists gnutls 2>/dev/null && echo -tags=gnutls)
export GOFLAGS = $(strip $(ENV_GOFLAGS) $(GNUTLS_TAG))
# Fuzz targets run briefly by `make test`: package:FuzzName.
FUZZ_TARGETS = \
	./chunker:FuzzReadIndex \
	./chunker:FuzzSumBatch \
	./fetch:FuzzDecodeChunk \
	./blockdev:FuzzOptions \
	./blockdev:FuzzRequests \
	./catar:FuzzDecoder \
	./catar:FuzzArchive \
	./vfs:FuzzTree

.PHONY: all build deps test test-long fuzz bench bench-quick demo demo-boot install clean vet

all: build

build:
	$(GO) build -o $(BIN) ./cmd/camount

deps:
	./scripts/deps.sh

# ARM boards run camount too: vet also checks that the 64-bit ARM build compiles.
vet:
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

test: deps build vet
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) fuzz
	$(MAKE) bench-quick

# Every benchmark once on a small corpus: a broken benchmark fails make test.
bench-quick: build
	./bench/run.sh --quick

# A found crasher is saved under PKG/testdata/fuzz and replayed as a seed, so
# it fails again on the retry. The retry is for Go's fuzz engine reporting
# "context deadline exceeded" when fuzztime ends while it is still
# minimising a new interesting input (not a failure of the code).
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg > fuzz.log 2>&1 && { tail -1 fuzz.log; continue; }; \
		cat fuzz.log; \
		if grep -q 'context deadline exceeded' fuzz.log && ! grep -q 'Failing input written' fuzz.log; then \
			echo "fuzz: $$fn: engine deadline while minimising; running it again"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg; \
		else exit 1; fi; \
	done; rm -f fuzz.log

test-long: deps build
	CAMOUNT_TEST_LONG=1 $(GO) test -count=1 -timeout 60m ./...
	$(MAKE) fuzz FUZZTIME=2m

bench: deps build
	./bench/run.sh

demo: deps build
	./scripts/demo.sh

# Boots a real Debian (systemd) under qemu from a lazily fetched image (docs/BOOT.md).
demo-boot: deps build
	./scripts/demo-boot.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/camount
	# Man pages (one per verb) and shell completions, from the flag definitions.
	$(BIN) gen-man $(DESTDIR)$(PREFIX)/share/man/man1
	mkdir -p $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	$(BIN) completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/camount
	$(BIN) completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_camount
	$(BIN) completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/camount.fish
	# mount -t camount and fstab (mount(8) runs /sbin/mount.TYPE), the initramfs-tools
	# hook for root=camount:URL and the systemd units (docs/BOOT.md).
	install -d $(DESTDIR)/sbin
	ln -sf $(PREFIX)/bin/camount $(DESTDIR)/sbin/mount.camount
	install -D -m 0755 contrib/initramfs-tools/hooks/camount $(DESTDIR)/usr/share/initramfs-tools/hooks/camount
	install -D -m 0755 contrib/initramfs-tools/scripts/local-top/camount $(DESTDIR)/usr/share/initramfs-tools/scripts/local-top/camount
	for u in contrib/systemd/*.service; do \
		install -d $(DESTDIR)$(PREFIX)/lib/systemd/system; \
		sed 's|@BINDIR@|$(PREFIX)/bin|g' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done

clean:
	rm -rf bin
