// Package gopacketdiff is a differential test of flow/datapath's packet
// decoding against gopacket v1.6.1, the library Hubble decodes packets
// with. It is a module of its own so that flowbus itself does not depend
// on gopacket. Run it with
//
//	cd flow/datapath/gopacketdiff && go test -fuzz FuzzPacket -fuzztime 2m
package gopacketdiff
