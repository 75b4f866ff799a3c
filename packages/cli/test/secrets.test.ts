import { describe, expect, it } from 'vitest';
import { maskUrl, redactor } from '../src/index.js';

describe('secrets in URLs', () => {
  it('masks the password of the user info and of password, token and secret parameters', () => {
    expect(maskUrl('etcd://root:s3cret@10.0.0.1:2379,10.0.0.2:2379?namespace=tg')).toBe('etcd://root:***@10.0.0.1:2379,10.0.0.2:2379?namespace=tg');
    expect(maskUrl('etcd://10.0.0.1:2379?namespace=tg&username=u&password=p%40ss&tls=true')).toBe('etcd://10.0.0.1:2379?namespace=tg&username=u&password=***&tls=true');
    expect(maskUrl('grpc://0.0.0.0:0?token=abc&advertise=h')).toBe('grpc://0.0.0.0:0?token=***&advertise=h');
    expect(maskUrl('etcd://root@10.0.0.1:2379?namespace=tg')).toBe('etcd://root@10.0.0.1:2379?namespace=tg');
    expect(maskUrl('memory://x')).toBe('memory://x');
  });

  it('scrubs every secret of the configured URLs from a line, raw or decoded', () => {
    const redact = redactor({ coordinator: 'etcd://root:p%40ss@h:2379?namespace=tg', transport: 'grpc://127.0.0.1:0?secret=xyz' });
    expect(redact('cannot open coordinator etcd://root:p%40ss@h:2379?namespace=tg: password p@ss refused; xyz')).toBe(
      'cannot open coordinator etcd://root:***@h:2379?namespace=tg: password *** refused; ***',
    );
    expect(redactor({ coordinator: 'etcd://h:2379?namespace=tg' })('nothing to hide')).toBe('nothing to hide');
  });
});
