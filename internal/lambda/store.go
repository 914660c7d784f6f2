package lambda

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DBFile is the package's database in the data dir.
const DBFile = "lambda.db"

// Buckets of lambda.db.
var (
	// metaBucket: function name -> meta (JSON).
	metaBucket = []byte("functions")
	// asyncBucket: request id -> Record (JSON), every accepted Event
	// invocation the worker still keeps a record of.
	asyncBucket = []byte("async")
	// payloadBucket: request id -> event, until the invocation is final.
	payloadBucket = []byte("async-payload")
	// orderBucket: big-endian sequence -> request id, in acceptance order.
	orderBucket = []byte("async-order")
)

// meta is what the Lambda API knows of a function that Hearth's spec has
// no place for. It describes the revision it was written for: a deploy
// through /v1 makes a new revision, whose zip hash and size are unknown.
type meta struct {
	Runtime     string `json:"runtime"`
	Role        string `json:"role,omitempty"`
	Description string `json:"description,omitempty"`
	// Handler is the handler as the client gave it (a path form such as
	// "src/app.handler" becomes "src.app.handler" in function.yaml).
	Handler string `json:"handler,omitempty"`
	// Revision is the registry revision the zip made; CodeSha256 (base64)
	// and CodeSize are the zip's.
	Revision   string `json:"revision"`
	CodeSha256 string `json:"code_sha256"`
	CodeSize   int64  `json:"code_size"`
}

// openDB opens (creating) lambda.db in dataDir with its buckets.
func openDB(dataDir string) (*bolt.DB, error) {
	path := filepath.Join(dataDir, DBFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: in use by another process", DBFile)
		}
		return nil, fmt.Errorf("opening %s: %w", DBFile, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{metaBucket, asyncBucket, payloadBucket, orderBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", DBFile, err)
	}
	return db, nil
}

func getMeta(db *bolt.DB, name string) (meta, bool, error) {
	var m meta
	var found bool
	err := db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(metaBucket).Get([]byte(name))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return meta{}, false, fmt.Errorf("reading %s's Lambda settings: %w", name, err)
	}
	return m, found, nil
}

func putMeta(db *bolt.DB, name string, m meta) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put([]byte(name), v) }); err != nil {
		return fmt.Errorf("storing %s's Lambda settings: %w", name, err)
	}
	return nil
}

func deleteMeta(db *bolt.DB, name string) error {
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Delete([]byte(name)) }); err != nil {
		return fmt.Errorf("removing %s's Lambda settings: %w", name, err)
	}
	return nil
}
