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
