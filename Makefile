# Native parts of the build: BPF objects (clang -target bpf) and the libbpf shim.
# `npm run build` runs this before tsc.
CLANG ?= clang
CC ?= gcc
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
BPF_CFLAGS := -O2 -g -target bpf -Wall -Werror -Wno-unused-function -I bpf/include -I $(ARCH_INC)

BPF_SRC := $(wildcard bpf/*.c)
BPF_OBJ := $(patsubst bpf/%.c,dist/bpf/%.o,$(BPF_SRC))
BPF_HDR := $(wildcard bpf/include/*.h)
TEST_SRC := $(wildcard test/bpf/*.bpf.c)
TEST_OBJ := $(patsubst test/bpf/%.bpf.c,dist/test/bpf/%.bpf.o,$(TEST_SRC))

all: $(BPF_OBJ) $(TEST_OBJ) dist/native/libhypha-shim.so examples/packet-counter/packet_counter.bpf.o

dist/bpf/%.o: bpf/%.c $(BPF_HDR)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

dist/test/bpf/%.bpf.o: test/bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The tutorial's own compile line (section 11.3).
examples/packet-counter/packet_counter.bpf.o: examples/packet-counter/packet_counter.bpf.c
	$(CLANG) -O2 -g -target bpf -I $(ARCH_INC) -c $< -o $@

dist/native/libhypha-shim.so: src/bpf/shim/hypha_shim.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -Wall -Werror -fPIC -shared $< -o $@ -lbpf

clean:
	rm -rf dist/bpf dist/native dist/test/bpf examples/packet-counter/*.o

.PHONY: all clean

# The C baseline of bench/sdk.ts.
all: dist/bench/native/sdk_bench
dist/bench/native/sdk_bench: bench/native/sdk_bench.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror $< -o $@ -lbpf

# The connect-latency client of bench/services.ts.
all: dist/bench/native/connect_bench
dist/bench/native/connect_bench: bench/native/connect_bench.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror $< -o $@

# The L7 HTTP proxy's native data path (src/proxy/http/native) and its unit tests.
PROXY_DIR := src/proxy/http/native
PROXY_CFLAGS := -O2 -g -std=gnu11 -Wall -Wextra -Werror
all: dist/native/hypha-http-proxy dist/test/native/h1_test dist/test/native/rules_test
dist/native/hypha-http-proxy: $(PROXY_DIR)/proxy.c $(PROXY_DIR)/h1.c $(PROXY_DIR)/rules.c $(wildcard $(PROXY_DIR)/*.h)
	@mkdir -p $(@D)
	$(CC) $(PROXY_CFLAGS) $(filter %.c,$^) -o $@ -lbpf -ljson-c -lpcre2-8
dist/test/native/h1_test: test/proxy/native/h1_test.c $(PROXY_DIR)/h1.c $(PROXY_DIR)/h1.h
	@mkdir -p $(@D)
	$(CC) $(PROXY_CFLAGS) $(filter %.c,$^) -o $@
dist/test/native/rules_test: test/proxy/native/rules_test.c $(PROXY_DIR)/rules.c $(PROXY_DIR)/rules.h
	@mkdir -p $(@D)
	$(CC) $(PROXY_CFLAGS) $(filter %.c,$^) -o $@ -ljson-c -lpcre2-8
