package flow

// The generated code is committed; regenerate it after editing a .proto file
// (needs protoc; protoc-gen-go is pinned as a tool in go.mod):
//
//go:generate sh -c "cd .. && protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) -I . --go_out=. --go_opt=module=github.com/flowbus/flowbus flow/flow.proto flow/relay/relay.proto flow/observer/observer.proto"
