package bpf

// The objects are generated from flowbus.c and committed, so building
// flowbus needs no clang. Regenerate them (clang and libbpf's headers
// installed) with:
//
//	go generate ./bpf/...
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf flowbus c/flowbus.c -- -I./c/include
