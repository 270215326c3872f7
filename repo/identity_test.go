package repo_test

import (
	"context"
	"errors"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
)

func sampleIdentity() repo.Identity {
	return repo.Identity{Repository: [16]byte{1, 2, 3}, Drive: repo.DriveID{9, 8, 7}, Rack: "r2"}
}

func TestIdentity(t *testing.T) {
	ctx := context.Background()
	d := drivetest.NewMem()
	if _, err := repo.ReadIdentity(ctx, d); !errors.Is(err, repo.ErrNoIdentity) {
		t.Errorf("ReadIdentity of a blank drive = %v, want ErrNoIdentity", err)
	}
	id := sampleIdentity()
	if err := repo.WriteIdentity(ctx, d, id); err != nil {
		t.Fatal(err)
	}
	got, err := repo.ReadIdentity(ctx, d)
	if err != nil || got != id {
		t.Fatalf("ReadIdentity = %+v, %v; want %+v", got, err, id)
	}
	moved := id
	moved.Rack = "r9"
	if err := repo.WriteIdentity(ctx, d, moved); err != nil {
		t.Errorf("rewriting with a new rack: %v", err)
	}
	other := id
	other.Drive[0]++
	if err := repo.WriteIdentity(ctx, d, other); !errors.Is(err, repo.ErrForeignDrive) {
		t.Errorf("WriteIdentity of another drive = %v, want ErrForeignDrive", err)
	}
	other = id
	other.Repository[0]++
	if err := repo.WriteIdentity(ctx, d, other); !errors.Is(err, repo.ErrForeignDrive) {
		t.Errorf("WriteIdentity of another repository = %v, want ErrForeignDrive", err)
	}
	if err := d.Put(ctx, repo.IdentityName, []byte("{garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.ReadIdentity(ctx, d); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("ReadIdentity of garbage = %v, want ErrCorrupt", err)
	}
	if err := repo.WriteIdentity(ctx, d, id); err == nil {
		t.Error("WriteIdentity overwrote a malformed identity")
	}
	if err := repo.WriteIdentity(ctx, d, repo.Identity{Rack: "bad rack"}); err == nil {
		t.Error("WriteIdentity accepted a bad rack label")
	}
}

func TestDecodeIdentityRejects(t *testing.T) {
	good := `{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef","rack":"r1"}`
	if _, err := repo.DecodeIdentity([]byte(good)); err != nil {
		t.Fatalf("good identity: %v", err)
	}
	bad := []string{
		``, `null`, `[]`, `{}`,
		`{"format":"coffer-drivX","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef","rack":"r1"}`,
		`{"format":"coffer-drive","version":2,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef","rack":"r1"}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeFF","drive":"0123456789abcdef","rack":"r1"}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddee","drive":"0123456789abcdef","rack":"r1"}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdeg","rack":"r1"}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef","rack":""}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef","rack":"r 1"}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef"}`,
		`{"format":"coffer-drive","version":1,"repository":"00112233445566778899aabbccddeeff","drive":"0123456789abcdef","rack":"r1","extra":1}`,
		good + `{}`,
	}
	for _, b := range bad {
		if _, err := repo.DecodeIdentity([]byte(b)); !errors.Is(err, repo.ErrCorrupt) {
			t.Errorf("DecodeIdentity(%s) = %v, want ErrCorrupt", b, err)
		}
	}
}

func FuzzDecodeIdentity(f *testing.F) {
	enc, _ := repo.EncodeIdentity(sampleIdentity())
	f.Add(enc)
	f.Add([]byte(`{"format":"coffer-drive","version":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := repo.DecodeIdentity(b)
		if err != nil {
			if !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again, err := repo.EncodeIdentity(id)
		if err != nil {
			t.Fatalf("decoded identity %+v does not encode: %v", id, err)
		}
		if id2, err := repo.DecodeIdentity(again); err != nil || id2 != id {
			t.Fatalf("round trip: %+v, %v; want %+v", id2, err, id)
		}
	})
}
