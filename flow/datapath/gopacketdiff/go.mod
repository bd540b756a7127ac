module github.com/flowbus/flowbus/flow/datapath/gopacketdiff

go 1.26.0

require (
	github.com/flowbus/flowbus v0.0.0
	google.golang.org/protobuf v1.36.12
)

require github.com/gopacket/gopacket v1.6.1

replace github.com/flowbus/flowbus => ../../..
