package flow

// The generated code is committed; regenerate it after editing a .proto file
// (needs protoc; protoc-gen-go and protoc-gen-go-grpc are pinned as tools in
// go.mod). The gRPC code of the Observer and Peer services is in
// observer_grpc.pb.go and peer_grpc.pb.go.
//
//go:generate sh -c "cd .. && protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) -I . --go_out=. --go_opt=module=github.com/flowbus/flowbus --go-grpc_out=. --go-grpc_opt=module=github.com/flowbus/flowbus flow/flow.proto flow/relay/relay.proto flow/observer/observer.proto flow/peer/peer.proto"
