package mqtttest

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocketProxy serves MQTT over WebSockets on 127.0.0.1 (ws://, or wss:// with the server
// certificate of Certs when useTLS) in front of the broker's plain listener: the mosquitto these
// machines install cannot open a WebSocket listener. Each WebSocket connection (subprotocol "mqtt", as
// MQTT over WebSockets specifies) is carried to a TCP connection of its own, binary frames to bytes and
// back. Cut and Restore work as they do on a TCP proxy. Stopped when t ends.
func (s *Server) WebSocketProxy(t testing.TB, useTLS bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	p := &Proxy{ln: ln, target: s.Addr()}
	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: func(*http.Request) bool { return true }}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return // Upgrade answered the client
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = ws.Close()
				return
			}
			if !p.track(ws.NetConn(), out) {
				return
			}
			go func() { // client to broker
				for {
					_, rd, err := ws.NextReader()
					if err == nil {
						_, err = io.Copy(out, rd)
					}
					if err != nil {
						_ = out.Close()
						_ = ws.Close()
						return
					}
				}
			}()
			buf := make([]byte, 64<<10) // broker to client
			for {
				n, err := out.Read(buf)
				if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					err = errors.New("client gone")
				}
				if err != nil {
					_ = out.Close()
					_ = ws.Close()
					return
				}
			}
		})}
	scheme := "ws"
	if useTLS {
		scheme = "wss"
		cert, err := tls.LoadX509KeyPair(s.Certs.ServerCertFile, s.Certs.ServerKeyFile)
		if err != nil {
			_ = ln.Close()
			t.Fatalf("loading the server certificate: %v", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		go func() { _ = hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { _ = hs.Serve(ln) }()
	}
	p.url = scheme + "://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/mqtt"
	t.Cleanup(func() {
		_ = hs.Close() // hijacked connections are not the server's: Cut closes them
		p.Cut()
	})
	return p
}
