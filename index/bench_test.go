package index

import (
	"encoding/binary"
	"testing"
)

// benchBlobs is the number of blob locations in the benchmark database.
const benchBlobs = 100_000

// benchDB returns a database holding benchBlobs blobs of one tenant (and a
// few of another), committed in batches of 10k, flushed to sstables so that
// lookups exercise the block cache and bloom-free sstable search.
func benchDB(b *testing.B) (*DB, TenantID) {
	b.Helper()
	db := openTest(b)
	tn := tenantID(7)
	for start := 0; start < benchBlobs; start += 10_000 {
		commit(b, db, func(bt *Batch) {
			for i := start; i < start+10_000; i++ {
				bt.PutBlob(tn, benchID(i), BlobLoc{Pack: packID(byte(i)), Type: DataBlob, Offset: uint32(i), Length: 1000, RawLength: 2000})
			}
		})
	}
	if err := db.db.Flush(); err != nil {
		b.Fatal(err)
	}
	return db, tn
}

// benchID spreads i over the ID space as a keyed hash would.
func benchID(i int) BlobID {
	var id BlobID
	x := uint64(i)*0x9e3779b97f4a7c15 + 1
	for j := 0; j < 4; j++ {
		binary.LittleEndian.PutUint64(id[8*j:], x)
		x = x*0xbf58476d1ce4e5b9 + 7
	}
	return id
}

func BenchmarkBlobHit(b *testing.B) {
	db, tn := benchDB(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		l, ok, err := db.Blob(tn, benchID(i%benchBlobs))
		if err != nil || !ok || l.Length != 1000 {
			b.Fatalf("Blob = %v, %v, %v", l, ok, err)
		}
	}
}

func BenchmarkBlobMiss(b *testing.B) {
	db, tn := benchDB(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, ok, err := db.Blob(tn, benchID(benchBlobs+i))
		if err != nil || ok {
			b.Fatalf("Blob = %v, %v", ok, err)
		}
	}
}
