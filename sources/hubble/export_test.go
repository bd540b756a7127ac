package hubble

import "context"

// Call makes one server-streaming call to path on the unix socket sock, as
// the source makes GetFlows, and passes each message to deliver; it
// returns io.EOF when the server ended the stream with status OK.
func Call(ctx context.Context, sock, path string, req []byte, deliver func([]byte) error) error {
	ep, err := parseEndpoint("unix://"+sock, nil)
	if err != nil {
		return err
	}
	c, err := open(ctx, ep, path, req)
	if err != nil {
		return err
	}
	defer c.close()
	return c.recv(deliver)
}
